import { RemovalPolicy, Stack, type StackProps } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import type { Construct } from 'constructs';
import { BYOK_ENCRYPTION_CONTEXT, dataKeyAlias, secretsPrefix, type SecretName } from '../../lambda/core/secrets';
import { TABLES, type TableDefinition, type TableNames } from '../../lambda/store/dynamodb/schema';

/** A table's logical id. */
export type TableId = TableDefinition['id'];
import { resourceName, type DeploymentConfig } from '../config';

export interface DataStackProps extends StackProps {
  readonly config: DeploymentConfig;
}

/** What a principal may do with one table. */
export type TableAccess = 'read' | 'readWrite';

const READ_ACTIONS = [
  'dynamodb:GetItem',
  'dynamodb:BatchGetItem',
  'dynamodb:Query',
  'dynamodb:Scan',
  'dynamodb:ConditionCheckItem',
  'dynamodb:DescribeTable',
];
const WRITE_ACTIONS = ['dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem', 'dynamodb:BatchWriteItem'];

/**
 * The data layer: the four tables, built from lambda/store/dynamodb/schema.ts so local and deployed tables cannot
 * drift, and the customer-managed KMS key that encrypts them, the SecureString secrets and BYOK provider keys.
 * Other stacks get access only through the `grant*` methods, which name exact tables, indexes and parameters.
 */
export class DataStack extends Stack {
  readonly key: kms.Key;
  readonly tables: Readonly<Record<TableDefinition['id'], dynamodb.Table>>;
  private readonly config: DeploymentConfig;

  constructor(scope: Construct, id: string, props: DataStackProps) {
    super(scope, id, props);
    this.config = props.config;

    this.key = new kms.Key(this, 'DataKey', {
      description: `tollgate ${props.config.stage}: tables, SSM SecureString secrets and BYOK envelope keys`,
      enableKeyRotation: true,
      alias: dataKeyAlias(props.config.stage),
      removalPolicy: RemovalPolicy.RETAIN,
    });

    const tables: Partial<Record<TableDefinition['id'], dynamodb.Table>> = {};
    for (const def of TABLES) {
      tables[def.id] = this.table(def);
    }
    this.tables = tables as Record<TableDefinition['id'], dynamodb.Table>;
  }

  /** Physical table names, as the Lambda config and adapters expect them. */
  get tableNames(): TableNames {
    return {
      keys: this.tables.keys.tableName,
      budgets: this.tables.budgets.tableName,
      usage: this.tables.usage.tableName,
      byok: this.tables.byok.tableName,
      audit: this.tables.audit.tableName,
      runs: this.tables.runs.tableName,
      cache: this.tables.cache.tableName,
      reconcile: this.tables.reconcile.tableName,
    };
  }

  /** The environment variables naming the tables (see lambda/config.ts). */
  get tableEnvironment(): Record<string, string> {
    const names = this.tableNames;
    return {
      TOLLGATE_TABLE_KEYS: names.keys,
      TOLLGATE_TABLE_BUDGETS: names.budgets,
      TOLLGATE_TABLE_USAGE: names.usage,
      TOLLGATE_TABLE_BYOK: names.byok,
      TOLLGATE_TABLE_AUDIT: names.audit,
      TOLLGATE_TABLE_RUNS: names.runs,
      TOLLGATE_TABLE_CACHE: names.cache,
      TOLLGATE_TABLE_RECONCILE: names.reconcile,
    };
  }

  /**
   * Grants item access on the named tables and their indexes (listed by name, no wildcards), and use of the
   * data key only through DynamoDB.
   */
  grantTables(grantee: iam.IGrantable, access: Partial<Record<TableId, TableAccess>>): void {
    const resources: string[] = [];
    const actions = new Set<string>();
    for (const def of TABLES) {
      const mode = access[def.id];
      if (!mode) continue;
      const table = this.tables[def.id];
      resources.push(table.tableArn, ...def.globalIndexes.map((ix) => `${table.tableArn}/index/${ix.indexName}`));
      READ_ACTIONS.forEach((a) => actions.add(a));
      if (mode === 'readWrite') WRITE_ACTIONS.forEach((a) => actions.add(a));
    }
    if (resources.length === 0) return;
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({ actions: [...actions].sort(), resources }),
    );
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['kms:Decrypt', 'kms:DescribeKey', 'kms:Encrypt', 'kms:GenerateDataKey'],
        resources: [this.key.keyArn],
        conditions: { StringEquals: { 'kms:ViaService': `dynamodb.${this.region}.amazonaws.com` } },
      }),
    );
  }

  /** The ARN of one SecureString parameter of this stage. */
  secretParameterArn(name: SecretName): string {
    return this.formatArn({
      service: 'ssm',
      resource: 'parameter',
      resourceName: `${secretsPrefix(this.config.stage).slice(1)}${name}`,
    });
  }

  /**
   * Grants `ssm:GetParameter(s)` on exactly the named SecureString parameters and `kms:Decrypt` of the data key
   * only through SSM and only for those parameters (SSM puts the parameter ARN in the encryption context).
   */
  grantSecrets(grantee: iam.IGrantable, names: readonly SecretName[]): void {
    const arns = names.map((n) => this.secretParameterArn(n));
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({ actions: ['ssm:GetParameter', 'ssm:GetParameters'], resources: arns }),
    );
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['kms:Decrypt'],
        resources: [this.key.keyArn],
        conditions: {
          // PARAMETER_ARN is single-valued: a list under StringEquals matches any one of the names.
          StringEquals: { 'kms:ViaService': `ssm.${this.region}.amazonaws.com`, 'kms:EncryptionContext:PARAMETER_ARN': arns },
        },
      }),
    );
  }

  /** Grants envelope encryption for BYOK provider keys: the data key, only with the BYOK encryption context. */
  grantByokCrypto(grantee: iam.IGrantable): void {
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['kms:Encrypt', 'kms:Decrypt', 'kms:GenerateDataKey'],
        resources: [this.key.keyArn],
        conditions: {
          StringEquals: Object.fromEntries(
            Object.entries(BYOK_ENCRYPTION_CONTEXT).map(([k, v]) => [`kms:EncryptionContext:${k}`, v]),
          ),
        },
      }),
    );
  }

  private table(def: TableDefinition): dynamodb.Table {
    const attr = (a: { name: string; type: 'S' | 'N' }): dynamodb.Attribute => ({
      name: a.name,
      type: a.type === 'S' ? dynamodb.AttributeType.STRING : dynamodb.AttributeType.NUMBER,
    });
    const table = new dynamodb.Table(this, `${def.id[0].toUpperCase()}${def.id.slice(1)}Table`, {
      tableName: resourceName(this.config, def.id),
      partitionKey: attr(def.partitionKey),
      sortKey: def.sortKey ? attr(def.sortKey) : undefined,
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      deletionProtection: true,
      removalPolicy: RemovalPolicy.RETAIN,
      encryption: dynamodb.TableEncryption.CUSTOMER_MANAGED,
      encryptionKey: this.key,
      timeToLiveAttribute: def.ttlAttribute,
    });
    for (const ix of def.globalIndexes) {
      table.addGlobalSecondaryIndex({
        indexName: ix.indexName,
        partitionKey: attr(ix.partitionKey),
        sortKey: ix.sortKey ? attr(ix.sortKey) : undefined,
        projectionType: dynamodb.ProjectionType.ALL,
      });
    }
    return table;
  }
}
