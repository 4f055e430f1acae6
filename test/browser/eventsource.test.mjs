// eventsource.test.mjs - mod_sse against a real browser's EventSource.
//
// Starts the integration harness's httpd (test/integration/serve.py), opens
// page/index.html in headless Debian Chromium (playwright-core, no bundled
// browser), publishes with sse-pub and checks what the page's EventSource
// received: default and named events, multi-line and UTF-8 data, and an
// automatic reconnect after a graceful restart that resumes via
// Last-Event-ID without loss or duplicates.
//
//   node test/browser/eventsource.test.mjs [--build-dir DIR]
//
// Prints one line per check and `browser: N passed, N failed`; exits
// non-zero on any failure. Every wait is bounded. A screenshot goes to
// test/browser/out/ (gitignored).

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const argv = process.argv.slice(2);
const bdIdx = argv.indexOf('--build-dir');
const buildDir = bdIdx >= 0 ? path.resolve(argv[bdIdx + 1])
  : (process.env.SSE_BUILD_DIR || repo);
const outDir = path.join(here, 'out');

let passed = 0, failed = 0;

async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`PASS  ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL  ${name}: ${e && e.message ? e.message : e}`);
  }
}

function assert(cond, msg) { if (!cond) throw new Error(msg); }
function assertEq(a, b, msg) {
  const ja = JSON.stringify(a), jb = JSON.stringify(b);
  if (ja !== jb) throw new Error(`${msg}: got ${ja}, want ${jb}`);
}

// ------------------------------------------------------------ the server

function startServer() {
  return new Promise((resolve, reject) => {
    const p = spawn('python3', [path.join(repo, 'test/integration/serve.py'),
      '--build-dir', buildDir, '--retry', '500'],
    { stdio: ['pipe', 'pipe', 'inherit'] });
    const rl = readline.createInterface({ input: p.stdout });
    const waiters = [];
    let first = true;
    const timer = setTimeout(() => reject(new Error('serve.py did not start in 30 s')), 30000);
    rl.on('line', (line) => {
      if (first) {
        first = false;
        clearTimeout(timer);
        let info;
        try { info = JSON.parse(line); } catch (e) { reject(new Error(`serve.py said: ${line}`)); return; }
        if (info.error) { reject(new Error(info.error)); return; }
        resolve({
          info, proc: p,
          command(cmd, ms = 30000) {
            return new Promise((res, rej) => {
              const t = setTimeout(() => rej(new Error(`serve.py: no answer to ${cmd}`)), ms);
              waiters.push((ans) => { clearTimeout(t); ans === 'ok' ? res(ans) : rej(new Error(ans)); });
              p.stdin.write(cmd + '\n');
            });
          },
          stop() {
            return new Promise((res) => {
              const t = setTimeout(() => { p.kill('SIGTERM'); res(); }, 30000);
              p.on('exit', () => { clearTimeout(t); res(); });
              p.stdin.end('stop\n');
            });
          },
        });
        return;
      }
      const w = waiters.shift();
      if (w) w(line);
    });
    p.on('exit', (code) => { if (first) reject(new Error(`serve.py exited ${code}`)); });
  });
}

// ------------------------------------------------------------ helpers

async function waitFor(page, fnText, arg, ms, what) {
  try {
    await page.waitForFunction(fnText, arg, { timeout: ms, polling: 50 });
  } catch (e) {
    const evs = await page.evaluate(() => window.__events).catch(() => null);
    throw new Error(`timed out after ${ms} ms waiting for ${what}; events: ${JSON.stringify(evs)}`);
  }
}

async function main() {
  let server, context, userDir;
  try {
    server = await startServer();
  } catch (e) {
    console.log(`FAIL  start httpd: ${e.message}`);
    console.log('browser: 0 passed, 1 failed');
    return 1;
  }
  const { port, bus, sse_pub: ssePub } = server.info;
  const publish = (channel, data, event) => {
    const args = ['publish', bus, '--channel', channel];
    if (event) args.push('--event', event);
    args.push('-');
    return execFileSync(ssePub, args, { input: data, timeout: 20000 }).toString().trim();
  };
  const published = [];
  const pub = (data, event) => { const id = publish('b1', data, event); published.push(id); return id; };

  try {
    userDir = mkdtempSync(path.join(tmpdir(), 'sse-chromium-'));
    context = await chromium.launchPersistentContext(userDir, {
      executablePath: '/usr/bin/chromium',
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
        '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync'],
      timeout: 60000,
    });
    const page = context.pages()[0] || await context.newPage();
    page.on('pageerror', (e) => console.log(`page error: ${e.message}`));

    await check('page opens an EventSource (open event)', async () => {
      await page.goto(`http://127.0.0.1:${port}/page/index.html?channel=b1`, { timeout: 15000 });
      await waitFor(page, () => window.__opens >= 1, null, 10000, 'the open event');
    });

    await check('default event arrives with its bus id', async () => {
      const id = pub('hello 1');
      await waitFor(page, (id) => window.__events.some((e) => e.id === id), id, 10000, 'event hello 1');
      const ev = (await page.evaluate(() => window.__events)).find((e) => e.id === id);
      assertEq(ev, { type: 'message', data: 'hello 1', id }, 'default event');
    });

    await check('named event reaches addEventListener("tick")', async () => {
      const id = pub('tock', 'tick');
      await waitFor(page, (id) => window.__events.some((e) => e.id === id), id, 10000, 'tick event');
      const ev = (await page.evaluate(() => window.__events)).find((e) => e.id === id);
      assertEq(ev, { type: 'tick', data: 'tock', id }, 'named event');
    });

    await check('multi-line data arrives as "a\\nb"', async () => {
      const id = pub('a\nb');
      await waitFor(page, (id) => window.__events.some((e) => e.id === id), id, 10000, 'multi-line event');
      const ev = (await page.evaluate(() => window.__events)).find((e) => e.id === id);
      assertEq(ev.data, 'a\nb', 'multi-line data');
    });

    await check('UTF-8 data arrives intact', async () => {
      const text = 'héllo ✓ 日本';
      const id = pub(text);
      await waitFor(page, (id) => window.__events.some((e) => e.id === id), id, 10000, 'UTF-8 event');
      const ev = (await page.evaluate(() => window.__events)).find((e) => e.id === id);
      assertEq(ev.data, text, 'UTF-8 data');
    });

    await check('reconnect after graceful restart resumes without loss or duplicate', async () => {
      const opensBefore = await page.evaluate(() => window.__opens);
      await server.command('graceful');
      // Published while the browser is between connections (or still on
      // the old one): every one must arrive exactly once.
      for (let i = 0; i < 3; i++) pub(`gap ${i}`);
      await waitFor(page, (n) => window.__opens > n, opensBefore, 15000, 'the reconnect (second open)');
      for (let i = 0; i < 2; i++) pub(`after ${i}`);
      const last = published[published.length - 1];
      await waitFor(page, (id) => window.__events.some((e) => e.id === id), last, 10000, 'the last event');
      await page.waitForTimeout(300); // let any duplicate show up
      const ids = (await page.evaluate(() => window.__events)).map((e) => e.id);
      assertEq(ids, published, 'ids received vs published');
      const errors = await page.evaluate(() => window.__errors);
      assert(errors >= 1, 'the browser never saw the stream drop (no error event)');
    });

    mkdirSync(outDir, { recursive: true });
    await page.screenshot({ path: path.join(outDir, 'eventsource.png'), fullPage: true })
      .then(() => console.log(`screenshot: ${path.join(outDir, 'eventsource.png')}`))
      .catch((e) => console.log(`screenshot failed: ${e.message}`));
  } catch (e) {
    failed++;
    console.log(`FAIL  browser run: ${e && e.message ? e.message : e}`);
  } finally {
    if (context) await context.close().catch(() => {});
    if (userDir) rmSync(userDir, { recursive: true, force: true });
    if (server) await server.stop();
  }
  console.log(`browser: ${passed} passed, ${failed} failed`);
  return failed ? 1 : 0;
}

main().then((code) => process.exit(code), (e) => {
  console.log(`FAIL  unexpected: ${e && e.stack ? e.stack : e}`);
  console.log(`browser: ${passed} passed, ${failed + 1} failed`);
  process.exit(1);
});
