import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import type * as sns from 'aws-cdk-lib/aws-sns';
import { Construct } from 'constructs';

/** An alarm on a widget's metric. */
export interface AlarmSpec {
  readonly threshold: number;
  /** What the alarm means to an operator; becomes the alarm description. */
  readonly description: string;
  /**
   * @default GREATER_THAN_OR_EQUAL_TO_THRESHOLD
   */
  readonly comparison?: cloudwatch.ComparisonOperator;
  /**
   * @default 1
   */
  readonly evaluationPeriods?: number;
  /**
   * @default NOT_BREACHING (no traffic is not an incident)
   */
  readonly treatMissingData?: cloudwatch.TreatMissingData;
}

/** One graph on the dashboard, optionally with an alarm on the same metric. */
export interface MonitoredMetric {
  /** Stable id: the alarm's construct id and name suffix. */
  readonly id: string;
  readonly title: string;
  readonly metrics: ReadonlyArray<cloudwatch.Metric | cloudwatch.MathExpression>;
  readonly alarm?: AlarmSpec;
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
 * an alarm that notifies the alarm topic and is drawn on its graph. Widgets and alarms are defined here once
 * instead of pasted per metric.
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
    this.dashboard.addWidgets(new cloudwatch.TextWidget({ markdown: `## ${title}`, width: 24, height: 1 }));
    const widgets = metrics.map((m) => this.widget(m));
    for (let i = 0; i < widgets.length; i += 3) this.dashboard.addWidgets(...widgets.slice(i, i + 3));
  }

  /** Adds the alarm status widget listing every alarm made so far; call it last. */
  addAlarmStatus(): void {
    if (this.alarms.length === 0) return;
    this.dashboard.addWidgets(
      new cloudwatch.AlarmStatusWidget({ title: 'Alarms', alarms: this.alarms, width: 24, height: 3 }),
    );
  }

  private widget(m: MonitoredMetric): cloudwatch.GraphWidget {
    const left = m.metrics.map((metric) => metric.with({ period: this.period }));
    let annotations: cloudwatch.HorizontalAnnotation[] | undefined;
    if (m.alarm) {
      if (left.length !== 1) throw new Error(`Monitoring: "${m.id}" has an alarm, so it must graph exactly one metric`);
      const alarm = new cloudwatch.Alarm(this, `${m.id}Alarm`, {
        alarmName: `${this.props.alarmNamePrefix}${m.id}`,
        alarmDescription: m.alarm.description,
        metric: left[0],
        threshold: m.alarm.threshold,
        comparisonOperator: m.alarm.comparison ?? cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        evaluationPeriods: m.alarm.evaluationPeriods ?? 1,
        treatMissingData: m.alarm.treatMissingData ?? cloudwatch.TreatMissingData.NOT_BREACHING,
      });
      alarm.addAlarmAction(new actions.SnsAction(this.props.alarmTopic));
      this.alarms.push(alarm);
      annotations = [alarm.toAnnotation()];
    }
    return new cloudwatch.GraphWidget({ title: m.title, left, leftAnnotations: annotations, width: 8, height: 6 });
  }
}
