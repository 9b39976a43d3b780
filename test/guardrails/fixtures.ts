/** Shared fixtures of the guardrails tests. */

/** The body of a real AWS Budgets ACTUAL notification as published to SNS. */
export const BUDGET_NOTIFICATION = `AWS Budget Notification November 23, 2026
AWS Account 123456789012

Dear AWS Customer,

You requested that we alert you when the ACTUAL Cost associated with your tollgate-dev-monthly budget is greater than $100.00 for the current month. The ACTUAL Cost associated with this budget is $104.37. You can find additional details below and by accessing the AWS Budgets dashboard [1].

Budget Name: tollgate-dev-monthly
Budget Type: Cost
Budgeted Amount: $100.00
Alert Type: ACTUAL
Alert Threshold: > $100.00
ACTUAL Amount: $104.37

[1] https://console.aws.amazon.com/billing/home#/budgets
`;
