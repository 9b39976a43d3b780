/**
 * An item's size as DynamoDB counts it for capacity units (DynamoDB Local does not report ConsumedCapacity):
 * the sum of each attribute's name and value, UTF-8.
 *
 * - String: its UTF-8 bytes. Binary: its bytes. Boolean, null: 1 byte.
 * - Number: 1 byte per 2 significant digits (leading and trailing zeroes, sign and decimal point dropped),
 *   plus 1 byte.
 * - List, map: 3 bytes, plus 1 byte per element (a map's element also its key's bytes), plus the elements.
 * - Sets: the sum of their members.
 *
 * A write is billed 1 write unit per started KB of the larger of the item's size before and after it.
 */
import type { AttributeValue } from '@aws-sdk/client-dynamodb';

export function dynamoItemSize(item: Record<string, AttributeValue>): number {
  let size = 0;
  for (const [name, value] of Object.entries(item)) size += Buffer.byteLength(name) + valueSize(value);
  return size;
}

/** Write units of a write that changed an item from `before` bytes to `after` bytes. */
export function writeUnits(before: number, after: number): number {
  return Math.max(1, Math.ceil(Math.max(before, after) / 1024));
}

function numberSize(n: string): number {
  const digits = n.replace(/^-/, '').replace('.', '').replace(/^0+/, '').replace(/0+$/, '');
  return Math.ceil(Math.max(1, digits.length) / 2) + 1;
}

function valueSize(v: AttributeValue): number {
  if (v.S !== undefined) return Buffer.byteLength(v.S);
  if (v.N !== undefined) return numberSize(v.N);
  if (v.B !== undefined) return v.B.length;
  if (v.BOOL !== undefined || v.NULL !== undefined) return 1;
  if (v.L !== undefined) return 3 + v.L.reduce((s, x) => s + 1 + valueSize(x), 0);
  if (v.M !== undefined) return 3 + Object.entries(v.M).reduce((s, [k, x]) => s + 1 + Buffer.byteLength(k) + valueSize(x), 0);
  if (v.SS !== undefined) return v.SS.reduce((s, x) => s + Buffer.byteLength(x), 0);
  if (v.NS !== undefined) return v.NS.reduce((s, x) => s + numberSize(x), 0);
  if (v.BS !== undefined) return v.BS.reduce((s, x) => s + x.length, 0);
  return 0;
}
