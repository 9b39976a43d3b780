/** Finds any of `secrets` in logged lines or table items; returns where each occurrence was. */
export function findSecrets(secrets: readonly string[], sources: { logs: readonly string[]; items: readonly unknown[] }): string[] {
  const hits: string[] = [];
  const haystacks: [string, string][] = [
    ...sources.logs.map((l, i): [string, string] => [`log line ${i}`, l]),
    ...sources.items.map((item, i): [string, string] => [`table item ${i}`, JSON.stringify(item)]),
  ];
  for (const secret of secrets) {
    if (secret.length < 8) throw new Error('scan only for real secrets (8+ characters)');
    for (const [where, text] of haystacks) if (text.includes(secret)) hits.push(`${where} contains a secret starting ${secret.slice(0, 4)}`);
  }
  return hits;
}
