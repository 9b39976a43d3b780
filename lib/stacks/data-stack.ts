import { CustomResource, Duration, RemovalPolicy, Stack, Validations, type StackProps } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import type { Construct } from 'constructs';
import { BYOK_ENCRYPTION_CONTEXT, dataKeyAlias, secretsPrefix, type SecretName } from '../../lambda/core/secrets';
import { TABLES, type TableDefinition, type TableNames } from '../../lambda/store/dynamodb/schema';
import type { GeneratedSecretKind } from '../../lambda/handlers/generated-secret';
import { resourceName, type DeploymentConfig } from '../config';
import { TollgateFunction } from '../constructs/tollgate-function';

/** A table's logical id. */
export type TableId = TableDefinition['id'];

export interface DataStackProps extends StackProps {
  readonly config: DeploymentConfig;
}

/**
 * One DynamoDB item action a principal may use on a table (without the `dynamodb:` prefix). Transactions need
 * the action of each item they touch (a TransactWriteItems `Put` needs PutItem), so there is no Transact action.
 */
export type TableAction =
  | 'GetItem'
  | 'BatchGetItem'
  | 'Query'
  | 'Scan'
  | 'ConditionCheckItem'
  | 'PutItem'
  | 'UpdateItem'
  | 'DeleteItem';

/** The generated secrets (created at deploy by a custom resource) and the parameters they are stored in. */
/** How long CloudFormation waits for a custom resource's answer (its default is an hour). */
export const CUSTOM_RESOURCE_TIMEOUT = Duration.minutes(5);

export const GENERATED_SECRETS: readonly (SecretName & GeneratedSecretKind)[] = ['key-pepper', 'jwt-secret'];

/**
 * The data layer: the four tables, built from lambda/store/dynamodb/schema.ts so local and deployed tables cannot
 * drift, and the customer-managed KMS key that encrypts them, the SecureString secrets and BYOK provider keys.
 * Other stacks get access only through the `grant*` methods, which name exact tables, indexes and parameters.
 */
export class DataStack extends Stack {
  readonly key: kms.Key;
  readonly tables: Readonly<Record<TableDefinition['id'], dynamodb.Table>>;
  /** Creates the generated secrets at deploy; see lambda/handlers/generated-secret.ts. */
  readonly secretGenerator: TollgateFunction;
  /** One custom resource per generated secret, by name. */
  readonly generatedSecrets: Readonly<Record<(typeof GENERATED_SECRETS)[number], CustomResource>>;
  private readonly config: DeploymentConfig;

  constructor(scope: Construct, id: string, props: DataStackProps) {
    super(scope, id, props);
    this.config = props.config;

    this.key = new kms.Key(this, 'DataKey', {
      description: `tollgate ${props.config.stage}: tables, SSM SecureString secrets and BYOK envelope keys`,
      enableKeyRotation: true,
      alias: dataKeyAlias(props.config.stage),
      // Kept on delete and replacement, but a create that rolls back removes it (schedules deletion), so a failed
      // first deploy can be retried with the same command (issue 23).
      removalPolicy: RemovalPolicy.RETAIN_ON_UPDATE_OR_DELETE,
    });

    const tables: Partial<Record<TableDefinition['id'], dynamodb.Table>> = {};
    for (const def of TABLES) {
      tables[def.id] = this.table(def);
    }
    this.tables = tables as Record<TableDefinition['id'], dynamodb.Table>;

    this.secretGenerator = new TollgateFunction(this, 'SecretGenerator', {
      entry: 'lambda/handlers/generated-secret.ts',
      description: 'Creates the generated SecureString secrets (key pepper, JWT secret) at deploy; values never leave SSM',
      timeout: Duration.minutes(1),
      logRetentionDays: props.config.logRetentionDays,
    });
    const names = [...GENERATED_SECRETS];
    const arns = names.map((n) => this.secretParameterArn(n));
    // Create with a created-by tag; on an existing parameter read its key (DescribeParameters: metadata only, and
    // it has no resource-level permission), re-encrypt it when another key holds it, tag who adopted it.
    const secretActions = [
      'ssm:PutParameter',
      'ssm:GetParameter',
      'ssm:AddTagsToResource',
      'ssm:ListTagsForResource',
      ...(props.config.secrets.removeOnDelete ? ['ssm:DeleteParameter', 'ssm:RemoveTagsFromResource'] : []),
    ];
    this.secretGenerator.fn.addToRolePolicy(new iam.PolicyStatement({ actions: secretActions, resources: arns }));
    this.secretGenerator.fn.addToRolePolicy(new iam.PolicyStatement({ actions: ['ssm:DescribeParameters'], resources: ['*'] }));
    const viaSsmFor = { 'kms:ViaService': `ssm.${this.region}.amazonaws.com`, 'kms:EncryptionContext:PARAMETER_ARN': arns };
    this.secretGenerator.fn.addToRolePolicy(
      new iam.PolicyStatement({ actions: ['kms:Encrypt', 'kms:GenerateDataKey'], resources: [this.key.keyArn], conditions: { StringEquals: viaSsmFor } }),
    );
    // Decrypting these two parameters under whichever key of the account holds them (a retained key of an earlier
    // Data stack), only through SSM: what re-encrypting them under this stack's key needs (issue 23).
    this.secretGenerator.fn.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['kms:Decrypt'],
        resources: [this.formatArn({ service: 'kms', resource: 'key', resourceName: '*' })],
        conditions: { StringEquals: viaSsmFor },
      }),
    );
    Validations.of(this.secretGenerator.fn).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:kms:<AWS::Region>:<AWS::AccountId>:key/*]',
      reason: 'kms:Decrypt of any key of the account, but only through SSM and only for the two generated parameters (encryption-context condition): re-encrypting a secret that a retained key of an earlier Data stack holds, whose id this stack cannot know.',
    });
    Validations.of(this.secretGenerator.fn).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason: 'ssm:DescribeParameters (metadata: type and KMS key, never a value) and the X-Ray actions of active tracing do not support resource-level permissions.',
    });
    const generated: Partial<Record<(typeof GENERATED_SECRETS)[number], CustomResource>> = {};
    for (const name of names) {
      const id = name.split('-').map((w) => w[0].toUpperCase() + w.slice(1)).join('');
      generated[name] = new CustomResource(this, `${id}Secret`, {
        serviceToken: this.secretGenerator.fn.functionArn,
        resourceType: 'Custom::TollgateGeneratedSecret',
        // A handler that crashes without answering fails the deploy after this, not after CloudFormation's hour.
        serviceTimeout: CUSTOM_RESOURCE_TIMEOUT,
        properties: {
          ParameterName: `${secretsPrefix(props.config.stage)}${name}`,
          Kind: name,
          KeyId: this.key.keyArn,
          KeyAlias: dataKeyAlias(props.config.stage),
          RemoveOnDelete: String(props.config.secrets.removeOnDelete),
        },
        // The parameter outlives the stack unless removeOnDelete: the handler decides, so the resource itself goes.
        removalPolicy: RemovalPolicy.DESTROY,
      });
      generated[name].node.addDependency(this.secretGenerator);
    }
    this.generatedSecrets = generated as Record<(typeof GENERATED_SECRETS)[number], CustomResource>;
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
   * Grants exactly the listed item actions per table (one statement per table; its indexes, by name, only when
   * Query or Scan is granted), and use of the data key only through DynamoDB and only for those tables.
   */
  grantTables(grantee: iam.IGrantable, access: Partial<Record<TableId, readonly TableAction[]>>): void {
    const granted: string[] = [];
    for (const def of TABLES) {
      const actions = access[def.id];
      if (!actions || actions.length === 0) continue;
      const table = this.tables[def.id];
      const reads = actions.includes('Query') || actions.includes('Scan');
      grantee.grantPrincipal.addToPrincipalPolicy(
        new iam.PolicyStatement({
          actions: [...new Set(actions)].sort().map((a) => `dynamodb:${a}`),
          // Retired indexes too: the previous version's code, still running while a deploy rolls out, reads them.
          resources: [
            table.tableArn,
            ...(reads ? [...(def.retiredIndexes ?? []), ...def.globalIndexes].map((ix) => `${table.tableArn}/index/${ix.indexName}`) : []),
          ],
        }),
      );
      granted.push(resourceName(this.config, def.id));
    }
    if (granted.length > 0) this.grantTableKey(grantee, granted);
  }

  /**
   * Append-only access to the audit table: PutItem only (no update, delete or batch write), limited to audit
   * partitions (`audit#<day>`) and without returning an overwritten item, plus Query to read the trail back.
   */
  grantAuditAppend(grantee: iam.IGrantable): void {
    const table = this.tables.audit;
    const def = TABLES.find((t) => t.id === 'audit');
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['dynamodb:PutItem'],
        resources: [table.tableArn],
        conditions: {
          'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['audit#*'] },
          StringEqualsIfExists: { 'dynamodb:ReturnValues': 'NONE' },
        },
      }),
    );
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['dynamodb:Query'],
        resources: [table.tableArn, ...(def?.globalIndexes ?? []).map((ix) => `${table.tableArn}/index/${ix.indexName}`)],
      }),
    );
    this.grantTableKey(grantee, [resourceName(this.config, 'audit')]);
  }

  /**
   * The data key for table access: only through DynamoDB, and Encrypt/Decrypt only with the encryption context of
   * the named tables (DynamoDB passes `aws:dynamodb:tableName`).
   */
  grantTableKey(grantee: iam.IGrantable, tableNames: readonly string[]): void {
    const viaDynamoDb = { 'kms:ViaService': `dynamodb.${this.region}.amazonaws.com` };
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['kms:Decrypt', 'kms:Encrypt', 'kms:GenerateDataKey'],
        resources: [this.key.keyArn],
        conditions: { StringEquals: { ...viaDynamoDb, 'kms:EncryptionContext:aws:dynamodb:tableName': [...tableNames] } },
      }),
    );
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({ actions: ['kms:DescribeKey'], resources: [this.key.keyArn], conditions: { StringEquals: viaDynamoDb } }),
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
      // Retained on delete and replacement; a create that rolls back deletes the (empty) table so the fixed name is
      // free for the retry. CloudFormation: DeletionPolicy RetainExceptOnCreate, UpdateReplacePolicy Retain.
      removalPolicy: RemovalPolicy.RETAIN_ON_UPDATE_OR_DELETE,
      encryption: dynamodb.TableEncryption.CUSTOMER_MANAGED,
      encryptionKey: this.key,
      timeToLiveAttribute: def.ttlAttribute,
    });
    // Retired indexes first (they were declared before the live ones), so a deploy changes only what it drops.
    for (const ix of [...(def.retiredIndexes ?? []), ...def.globalIndexes]) {
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
