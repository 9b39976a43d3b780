import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import type * as logs from 'aws-cdk-lib/aws-logs';
import type * as sns from 'aws-cdk-lib/aws-sns';
import { Construct } from 'constructs';

/** Options every alarm shares. */
export interface AlarmSpecBase {
  /** What the alarm means to an operator; becomes the alarm description. */
  readonly description: string;
  /**
   * Datapoints within evaluationPeriods that must breach.
   * @default evaluationPeriods
   */
  readonly datapointsToAlarm?: number;
  /**
   * @default 1
   */
  readonly evaluationPeriods?: number;
  /**
   * @default NOT_BREACHING (no traffic is not an incident)
   */
  readonly treatMissingData?: cloudwatch.TreatMissingData;
}

/** An alarm when the metric crosses a fixed threshold. */
export interface StaticAlarmSpec extends AlarmSpecBase {
  /**
   * @default 'static'
   */
  readonly kind?: 'static';
  readonly threshold: number;
  /**
   * @default GREATER_THAN_OR_EQUAL_TO_THRESHOLD
   */
  readonly comparison?: cloudwatch.ComparisonOperator;
}

/** An alarm when the metric leaves the band CloudWatch anomaly detection learned from its history. */
export interface AnomalyAlarmSpec extends AlarmSpecBase {
  readonly kind: 'anomaly';
  /**
   * Width of the expected band in standard deviations; must be greater than 0.
   * @default 2
   */
  readonly stdDevs?: number;
  /**
   * @default GREATER_THAN_UPPER_THRESHOLD (spend falling is not an incident)
   */
  readonly comparison?: cloudwatch.ComparisonOperator;
}

/** An alarm on a widget's metric. */
export type AlarmSpec = StaticAlarmSpec | AnomalyAlarmSpec;

/** One graph on the dashboard, optionally with an alarm on the same metric. */
export interface MonitoredMetric {
  /** Stable id: the alarm's construct id and name suffix. */
  readonly id: string;
  readonly title: string;
  readonly metrics: ReadonlyArray<cloudwatch.Metric | cloudwatch.MathExpression>;
  readonly alarm?: AlarmSpec;
  /**
   * The period of this graph's metrics (and its alarm).
   * @default the monitoring's period
   */
  readonly period?: Duration;
  /**
   * Stack the lines (for parts of a whole, such as cost by model).
   * @default false
   */
  readonly stacked?: boolean;
}

/** A CloudWatch Logs Insights query shown as a table on the dashboard. */
export interface MonitoredQuery {
  readonly title: string;
  readonly logGroups: readonly logs.ILogGroup[];
  /** The query, one pipeline stage per line. */
  readonly queryLines: readonly string[];
}

export interface MonitoringProps {
  readonly dashboardName: string;
  /** Prefix of every alarm name, e.g. `tollgate-prod-`. */
  readonly alarmNamePrefix: string;
  /** Where every alarm notifies. */
  readonly alarmTopic: sns.ITopic;
  /**
   * @default Duration.minutes(5)
   */
  readonly period?: Duration;
}

/**
 * The dashboard and alarm factory: each {@link MonitoredMetric} becomes a graph and, when it has an alarm spec,
 * an alarm (static or anomaly detection) that notifies the alarm topic when it fires and when it recovers (OK),
 * and is drawn on its graph. Widgets and
 * alarms are defined here once instead of pasted per metric.
 */
export class Monitoring extends Construct {
  readonly dashboard: cloudwatch.Dashboard;
  readonly alarms: cloudwatch.Alarm[] = [];
  private readonly props: MonitoringProps;
  private readonly period: Duration;

  constructor(scope: Construct, id: string, props: MonitoringProps) {
    super(scope, id);
    this.props = props;
    this.period = props.period ?? Duration.minutes(5);
    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      dashboardName: props.dashboardName,
      defaultInterval: Duration.hours(6),
    });
  }

  /** Adds a titled row of graphs (three per row) and their alarms. */
  addSection(title: string, metrics: readonly MonitoredMetric[]): void {
    this.addHeading(title);
    const widgets = metrics.map((m) => this.widget(m));
    for (let i = 0; i < widgets.length; i += 3) this.dashboard.addWidgets(...widgets.slice(i, i + 3));
  }

  /** Adds a titled row of Logs Insights tables (two per row). */
  addQueries(title: string, queries: readonly MonitoredQuery[]): void {
    this.addHeading(title);
    const widgets = queries.map(
      (q) =>
        new cloudwatch.LogQueryWidget({
          title: q.title,
          logGroupNames: q.logGroups.map((g) => g.logGroupName),
          queryLines: [...q.queryLines],
          view: cloudwatch.LogQueryVisualizationType.TABLE,
          width: 12,
          height: 6,
        }),
    );
    for (let i = 0; i < widgets.length; i += 2) this.dashboard.addWidgets(...widgets.slice(i, i + 2));
  }

  /** Adds a titled row of ready-made widgets (for views {@link addSection} does not draw: bars, single values). */
  addWidgetRow(title: string, widgets: readonly cloudwatch.IWidget[]): void {
    this.addHeading(title);
    this.dashboard.addWidgets(...widgets);
  }

  /** Adds the alarm status widget listing every alarm made so far; call it last. */
  addAlarmStatus(): void {
    if (this.alarms.length === 0) return;
    this.dashboard.addWidgets(
      new cloudwatch.AlarmStatusWidget({ title: 'Alarms', alarms: this.alarms, width: 24, height: 3 }),
    );
  }

  private addHeading(title: string): void {
    this.dashboard.addWidgets(new cloudwatch.TextWidget({ markdown: `## ${title}`, width: 24, height: 1 }));
  }

  private widget(m: MonitoredMetric): cloudwatch.GraphWidget {
    const period = m.period ?? this.period;
    const left = m.metrics.map((metric) => metric.with({ period }));
    let annotations: cloudwatch.HorizontalAnnotation[] | undefined;
    if (m.alarm) {
      if (left.length !== 1) throw new Error(`Monitoring: "${m.id}" has an alarm, so its metrics must hold exactly one metric`);
      const alarm = this.alarm(m.id, m.alarm, left[0]!);
      // OK too, so whoever was paged also hears that it recovered.
      alarm.addAlarmAction(new actions.SnsAction(this.props.alarmTopic));
      alarm.addOkAction(new actions.SnsAction(this.props.alarmTopic));
      this.alarms.push(alarm);
      // An anomaly alarm's threshold is a band, not a line: CloudWatch draws the band with the alarm.
      if (m.alarm.kind !== 'anomaly') annotations = [alarm.toAnnotation()];
    }
    return new cloudwatch.GraphWidget({ title: m.title, left, leftAnnotations: annotations, stacked: m.stacked ?? false, width: 8, height: 6 });
  }

  private alarm(id: string, spec: AlarmSpec, metric: cloudwatch.IMetric): cloudwatch.Alarm {
    const common = {
      alarmName: `${this.props.alarmNamePrefix}${id}`,
      alarmDescription: spec.description,
      metric,
      evaluationPeriods: spec.evaluationPeriods ?? 1,
      ...(spec.datapointsToAlarm ? { datapointsToAlarm: spec.datapointsToAlarm } : {}),
      treatMissingData: spec.treatMissingData ?? cloudwatch.TreatMissingData.NOT_BREACHING,
    };
    if (spec.kind === 'anomaly') {
      const stdDevs = spec.stdDevs ?? 2;
      if (!(stdDevs > 0)) throw new Error(`Monitoring: "${id}".alarm.stdDevs must be greater than 0, got ${stdDevs}`);
      return new cloudwatch.AnomalyDetectionAlarm(this, `${id}Alarm`, {
        ...common,
        stdDevs,
        comparisonOperator: spec.comparison ?? cloudwatch.ComparisonOperator.GREATER_THAN_UPPER_THRESHOLD,
      });
    }
    return new cloudwatch.Alarm(this, `${id}Alarm`, {
      ...common,
      threshold: spec.threshold,
      comparisonOperator: spec.comparison ?? cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
    });
  }
}
