// Drives MQTT.js in headless Chromium against the broker's WebSocket listener.
//
// Usage: node run.mjs BROKER_WS_URL [TIMEOUT_MS] [PROTOCOL_VERSION]
// The page connects with MQTT.js (protocol version 4, MQTT 3.1.1, unless told 5), subscribes to
// browser/in/#, publishes "ready" to browser/ready, and answers every message on browser/in/# by
// publishing "echo:<payload>" to browser/echo. With MQTT 5 it logs the user properties it received
// and sends its echo with the user property via=browser and content type text/plain.
// The test on the other side (tests/python/test_browser.py) drives that exchange with paho-mqtt.
// Prints one JSON line {ok, log} and exits 0 when the page saw its messages, 1 otherwise.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const brokerUrl = process.argv[2];
const timeoutMs = Number(process.argv[3] || 15000);
const protocolVersion = Number(process.argv[4] || 4);
if (!brokerUrl) {
  console.error('usage: node run.mjs BROKER_WS_URL [TIMEOUT_MS]');
  process.exit(2);
}

const page = `<!doctype html><html><body><script src="/mqtt.min.js"></script><script>
window.log = [];
window.done = false;
const client = mqtt.connect(${JSON.stringify(brokerUrl)}, {
  clientId: 'browser-' + Math.random().toString(16).slice(2), protocolVersion: ${protocolVersion},
  reconnectPeriod: 0,
});
const v5 = ${protocolVersion} === 5;
client.on('connect', () => {
  window.log.push('connected');
  client.subscribe('browser/in/#', { qos: 1 }, (err, granted) => {
    if (err) { window.log.push('subscribe error ' + err); return; }
    window.log.push('subscribed qos ' + granted[0].qos);
    client.publish('browser/ready', 'ready', { qos: 1 });
  });
});
client.on('message', (topic, payload, packet) => {
  window.log.push('message ' + topic + ' ' + payload.toString());
  const options = { qos: 1 };
  if (v5) {
    const props = (packet.properties && packet.properties.userProperties) || {};
    window.log.push('user properties ' + JSON.stringify(props));
    options.properties = { userProperties: { via: 'browser' }, contentType: 'text/plain' };
  }
  client.publish('browser/echo', 'echo:' + payload.toString(), options, () => { window.done = true; });
});
client.on('error', (e) => window.log.push('error ' + e.message));
</script></body></html>`;

const server = http.createServer((req, res) => {
  if (req.url === '/mqtt.min.js') {
    res.writeHead(200, { 'content-type': 'text/javascript' });
    res.end(fs.readFileSync(path.join(here, 'node_modules/mqtt/dist/mqtt.min.js')));
  } else {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(page);
  }
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const pageUrl = `http://127.0.0.1:${server.address().port}/`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--ignore-certificate-errors'],
});
let ok = false;
let log = [];
try {
  const tab = await browser.newPage();
  await tab.goto(pageUrl);
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    ({ done: ok, log } = await tab.evaluate(() => ({ done: window.done, log: window.log })));
    if (ok) break;
    await new Promise((r) => setTimeout(r, 100));
  }
} finally {
  await browser.close();
  server.close();
}
console.log(JSON.stringify({ ok, log }));
process.exit(ok ? 0 : 1);
