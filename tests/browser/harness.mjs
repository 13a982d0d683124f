// Shared pieces of the browser tests: a natter server per suite, headless Debian Chromium, and page actions.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const outputDir = process.env.NATTER_TEST_OUTPUT || path.join(repoRoot, 'target', 'browser-output');
export const chromiumPath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

const inCI = !!process.env.CI && process.env.CI !== 'false' && process.env.CI !== '0';

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

function findNatter() {
  if (process.env.NATTER_BIN) return process.env.NATTER_BIN;
  const candidates = [
    process.env.CARGO_TARGET_DIR && path.join(process.env.CARGO_TARGET_DIR, 'debug', 'natter'),
    path.join(repoRoot, 'target', 'debug', 'natter'),
  ].filter(Boolean);
  return candidates.find((candidate) => existsSync(candidate)) || null;
}

/**
 * Why this environment cannot run the browser tests, or false when it can. In CI nothing may be missing:
 * a missing piece fails the run instead of skipping it.
 */
export function missingPrerequisite() {
  const problems = [];
  const bin = findNatter();
  // A binary that was asked for by name and is not there is a mistake, not a reason to skip.
  if (bin && !existsSync(bin)) throw new Error(`NATTER_BIN points to ${bin}, which does not exist`);
  if (!bin) problems.push('NATTER_BIN is not set and no built natter binary was found');
  if (!existsSync(chromiumPath)) problems.push(`no Chromium at ${chromiumPath} (apt-get install chromium)`);
  let playwright = true;
  try {
    // Resolved next to this file, so it works from any working directory.
    import.meta.resolve('playwright-core');
  } catch {
    playwright = false;
  }
  if (!playwright) {
    problems.push('playwright-core is not installed (cd tests/browser && npm ci)');
  }
  if (problems.length === 0) return false;
  const reason = problems.join('; ');
  if (inCI) throw new Error(`browser tests cannot run in CI: ${reason}`);
  return reason;
}

export function ensureOutputDir() {
  mkdirSync(outputDir, { recursive: true });
  return outputDir;
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** One natter process with its own data directory, restartable on the same port. */
/**
 * With NATTER_TEST_POSTGRES (the URL of a throwaway cluster's `postgres` database, set by
 * tests/browser.rs for TEST_STORAGE=postgres), a database of this server's own and the config
 * lines that keep its data there; otherwise none.
 */
function postgresStorage(name) {
  const admin = process.env.NATTER_TEST_POSTGRES;
  if (!admin) return [];
  const db = `b_${name.toLowerCase().replace(/[^a-z0-9]/g, '')}_${process.pid}_${Date.now()}`;
  execFileSync('psql', [admin, '-q', '-c', `CREATE DATABASE ${db}`]);
  return ['storage = "postgres"', `database_url = ${JSON.stringify(admin.replace(/\/postgres$/, `/${db}`))}`];
}

export class NatterServer {
  constructor(name, { admins = [], chats = ['Main'], extraConfig = '' } = {}) {
    this.name = name;
    this.admins = admins;
    this.chats = chats;
    this.extraConfig = extraConfig;
    this.bin = findNatter();
    this.lines = [];
    this.waiters = [];
    this.process = null;
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  async start() {
    if (!this.dir) {
      this.dir = mkdtempSync(path.join(os.tmpdir(), `natter-browser-${this.name}-`));
      this.port = await freePort();
      this.configPath = path.join(this.dir, 'config.toml');
      const toml = (list) => `[${list.map((item) => JSON.stringify(item)).join(', ')}]`;
      writeFileSync(this.configPath, [
        ...postgresStorage(this.name),
        `listen = "127.0.0.1:${this.port}"`,
        `public_url = "http://127.0.0.1:${this.port}"`,
        `data_dir = ${JSON.stringify(path.join(this.dir, 'data'))}`,
        'password_iterations = 1000',
        'poll_timeout = "5s"',
        `chats = ${toml(this.chats)}`,
        `admins = ${toml(this.admins)}`,
        this.extraConfig,
        '',
        '[mail]',
        'provider = "log"',
        '',
        '[rate_limit]',
        'enabled = false',
        '',
      ].join('\n'));
      ensureOutputDir();
      this.log = createWriteStream(path.join(outputDir, `${this.name}-server.log`), { flags: 'w' });
    }
    const from = this.lines.length;
    // natter reads every NATTER_* variable as a config key and refuses unknown ones: pass none of the
    // variables that only steer these tests.
    const env = { ...process.env, NATTER_LOG: process.env.NATTER_LOG || 'info' };
    for (const name of Object.keys(env)) {
      if (name === 'NATTER_BIN' || name.startsWith('NATTER_TEST')) delete env[name];
    }
    const child = spawn(this.bin, ['--dev', '--config', this.configPath], {
      cwd: this.dir,
      stdio: ['ignore', 'pipe', 'pipe'],
      env,
    });
    this.process = child;
    this.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    for (const stream of [child.stdout, child.stderr]) {
      let rest = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk) => {
        rest += chunk;
        const parts = rest.split('\n');
        rest = parts.pop();
        for (const line of parts) this.addLine(line);
      });
    }
    const stopWaiting = new AbortController();
    const started = this.waitForLine(/listening on/, { from, timeout: 20_000, signal: stopWaiting.signal });
    const died = this.exited.then(({ code, signal }) => {
      throw new Error(`natter exited (code ${code}, signal ${signal}) before listening:\n${this.tail()}`);
    });
    // Neither promise may be left to reject unobserved once the other has settled.
    started.catch(() => {});
    died.catch(() => {});
    try {
      await Promise.race([started, died]);
    } finally {
      stopWaiting.abort();
    }
  }

  addLine(line) {
    this.lines.push(line);
    if (this.log) this.log.write(`${line}\n`);
    for (const waiter of [...this.waiters]) waiter(line, this.lines.length - 1);
  }

  tail(count = 30) {
    return this.lines.slice(-count).join('\n');
  }

  /** Waits for a log line (from index `from` on) matching `pattern`; resolves to the match. */
  waitForLine(pattern, { from = 0, timeout = 10_000, signal } = {}) {
    for (let i = from; i < this.lines.length; i += 1) {
      const match = this.lines[i].match(pattern);
      if (match) return Promise.resolve(match);
    }
    return new Promise((resolve, reject) => {
      const waiter = (line) => {
        const match = line.match(pattern);
        if (!match) return;
        cleanup();
        resolve(match);
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`no log line matching ${pattern} within ${timeout} ms; last lines:\n${this.tail()}`));
      }, timeout);
      const cleanup = () => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== waiter);
        if (signal) signal.removeEventListener('abort', cancel);
      };
      const cancel = () => {
        cleanup();
        reject(new Error('stopped waiting'));
      };
      if (signal) signal.addEventListener('abort', cancel);
      this.waiters.push(waiter);
    });
  }

  /** Index to pass as `from` to only see log lines written after this moment. */
  mark() {
    return this.lines.length;
  }

  /** The activation link the log mailer wrote for `user`. */
  async activationLink(user, from = 0) {
    const escaped = encodeURIComponent(user).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const match = await this.waitForLine(new RegExp(`activation link: (\\S*/api/verifyEmail/${escaped}/\\S+)`), { from });
    return match[1];
  }

  /** The first password reset token the log mailer wrote after `from`. */
  async resetToken(from) {
    const match = await this.waitForLine(/reset password token: ([A-Za-z0-9]+)/, { from });
    return match[1];
  }

  /** Graceful stop: SIGTERM, then wait for the exit. */
  async stop() {
    if (!this.process || this.process.exitCode !== null || this.process.signalCode !== null) return null;
    this.process.kill('SIGTERM');
    let timer;
    const timeout = new Promise((resolve) => { timer = setTimeout(() => resolve(null), 10_000); });
    const result = await Promise.race([this.exited, timeout]);
    clearTimeout(timer);
    if (!result) {
      this.process.kill('SIGKILL');
      await this.exited;
      throw new Error(`natter did not stop within 10 s of SIGTERM:\n${this.tail()}`);
    }
    return result;
  }

  /** Crash: SIGKILL, no chance to save anything that was not already on disk. */
  async kill() {
    if (!this.process || this.process.exitCode !== null || this.process.signalCode !== null) return null;
    this.process.kill('SIGKILL');
    return this.exited;
  }

  async restart() {
    const result = await this.stop();
    await this.start();
    return result;
  }

  /** Stops the server and removes its data directory. */
  async dispose() {
    try {
      await this.stop();
    } finally {
      if (this.log) this.log.end();
      if (this.dir) rmSync(this.dir, { recursive: true, force: true });
    }
  }

  /** A JSON API call from the test itself (no browser), for setup steps. */
  async api(method, route, body, cookie) {
    const headers = { 'Content-Type': 'application/json' };
    if (cookie) headers.Cookie = cookie;
    const response = await fetch(`${this.url}${route}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    return { status: response.status, text, json: text ? safeJson(text) : null, headers: response.headers };
  }

  /** Registers and verifies an account through the API and the logged activation link. */
  async registerVerified(user, email, password) {
    const from = this.mark();
    const registered = await this.api('POST', '/api/register', { user, email, password });
    assert.equal(registered.status, 200, `register ${user}: ${registered.text}`);
    const link = await this.activationLink(user, from);
    const verified = await fetch(link);
    assert.equal(verified.status, 200, `verify ${user}: ${await verified.text()}`);
  }
}

function safeJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

export async function launchBrowser() {
  const { chromium } = await import('playwright-core');
  return chromium.launch({ executablePath: chromiumPath, headless: true, args: CHROMIUM_ARGS });
}

/**
 * A fresh browser context (its own cookies: one person) with one page. The page records console errors,
 * uncaught exceptions and dialogs (an XSS payload that runs would open one).
 */
export async function openPerson(browser, { viewport = { width: 1280, height: 800 }, colorScheme = 'light' } = {}) {
  const context = await browser.newContext({ viewport, colorScheme });
  context.setDefaultTimeout(10_000);
  const page = await watchPage(await context.newPage());
  return { context, page };
}

/** Attaches the error and dialog recorders to a page (for extra tabs of one person as well). */
export async function watchPage(page) {
  page.consoleErrors = [];
  page.dialogs = [];
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    const text = message.text();
    const url = (message.location() && message.location().url) || '';
    // The browser logs every non-2xx answer as "Failed to load resource". For /api/ calls those are answers
    // the client handles and shows (a wrong password, a server being restarted), not
    // faults of the page; anything else (a missing asset, a CSP violation, an exception) counts.
    if (text.startsWith('Failed to load resource') && /\/api\//.test(url)) return;
    page.consoleErrors.push(url ? `${text} (${url})` : text);
  });
  page.on('pageerror', (error) => page.consoleErrors.push(`uncaught: ${error.message}`));
  page.on('dialog', async (dialog) => {
    page.dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    await dialog.dismiss().catch(() => {});
  });
  return page;
}

export function assertClean(page) {
  assert.deepEqual(page.consoleErrors, [], 'no console errors or uncaught exceptions');
  assert.deepEqual(page.dialogs, [], 'no dialogs opened');
}

export async function screenshot(page, name) {
  ensureOutputDir();
  const file = path.join(outputDir, `${name}.png`);
  await page.screenshot({ path: file });
  return file;
}

// ----- page actions (done as a person would: labels, buttons, keys) -----

export async function waitForMainScreen(page, user) {
  await page.locator('#main-screen').waitFor({ state: 'visible' });
  await page.locator('#me-name', { hasText: user }).waitFor();
  await page.locator('#conn-status[data-status="live"]').waitFor({ state: 'attached' });
}

export async function guestLogin(page, server, name) {
  await page.goto(server.url);
  await page.locator('#auth-screen').waitFor({ state: 'visible' });
  await page.getByRole('tab', { name: 'Guest' }).click();
  const panel = page.locator('#panel-guest');
  await panel.getByLabel('Pick a name').fill(name);
  await panel.getByRole('button', { name: 'Join as guest' }).click();
  await waitForMainScreen(page, name);
}

export async function signIn(page, name, password) {
  await page.getByRole('tab', { name: 'Sign in' }).click();
  const panel = page.locator('#panel-signin');
  await panel.getByLabel('Username').fill(name);
  await panel.getByLabel('Password').fill(password);
  await panel.getByRole('button', { name: 'Sign in', exact: true }).click();
}

export function chatButton(page, chat) {
  return page.locator(`#chat-list button[data-chat="${chat.replace(/["\\]/g, '\\$&')}"]`);
}

export async function openChat(page, chat) {
  await chatButton(page, chat).click();
  await page.locator('#chat-title', { hasText: chat }).waitFor();
}

export async function joinOpenChat(page) {
  await page.locator('#join-button').click();
  await page.locator('#leave-button').waitFor({ state: 'visible' });
}

export async function sendMessage(page, text) {
  const input = page.getByLabel('Message', { exact: true });
  await input.fill(text);
  await input.press('Enter');
  await messageText(page, text).waitFor();
  await page.waitForFunction(() => document.getElementById('message-input').value === '');
}

/** The message with exactly this text in the open chat. */
export function messageText(page, text) {
  return page.locator('#messages .message-text').getByText(text, { exact: true });
}

export function member(page, name) {
  return page.locator('#member-list .member-name').getByText(name, { exact: true });
}

export function systemLine(page, text) {
  return page.locator('#messages .system-text').getByText(text, { exact: true });
}

/** Waits until `locator` matches exactly `count` elements. */
export async function waitForCount(locator, count, timeout = 10_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const found = await locator.count();
    if (found === count) return;
    if (Date.now() > deadline) throw new Error(`expected ${count} matches of ${locator}, found ${found}`);
    await sleep(100);
  }
}
