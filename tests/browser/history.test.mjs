// History, links, deletion, kicks and background-tab signals: scrolling back through 200 messages, clickable
// http(s) links only, messages deleted by their author or an admin vanishing live, an admin kicking a guest, the
// unread count in the title of a hidden tab, and notifications through a granted permission.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  assertClean, guestLogin, joinOpenChat, launchBrowser, member, messageText, missingPrerequisite, NatterServer,
  openPerson, screenshot, sendMessage, signIn, waitForMainScreen, watchPage,
} from './harness.mjs';

const skip = missingPrerequisite();

/** Makes the page believe its tab is hidden (or visible again), as a switch of tabs would. */
async function setHidden(page, hidden) {
  await page.evaluate((value) => {
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => value });
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => (value ? 'hidden' : 'visible') });
    document.dispatchEvent(new Event('visibilitychange'));
  }, hidden);
}

/** Records notifications and permission requests of the page, whatever the browser does with them. */
function recordNotifications() {
  window.shownNotifications = [];
  window.permissionRequests = 0;
  const Real = window.Notification;
  if (!Real) return;
  class Recorded extends Real {
    constructor(title, options = {}) {
      window.shownNotifications.push({ title, body: options.body });
      super(title, options);
    }
  }
  Recorded.requestPermission = (...args) => {
    window.permissionRequests += 1;
    return Real.requestPermission(...args);
  };
  window.Notification = Recorded;
}

describe('history and moderation', { skip, timeout: 180_000 }, () => {
  let server;
  let browser;
  let alice;
  let bob;
  let root;

  before(async () => {
    server = new NatterServer('history', { admins: ['root'], extraConfig: 'durability = "relaxed"' });
    await server.start();
    await server.registerVerified('root', 'root@example.com', 'root password 1');
    // 200 older messages from a guest, through the API.
    const login = await server.api('POST', '/api/login', { user: 'seeder' });
    assert.equal(login.status, 200, login.text);
    const cookie = login.headers.get('set-cookie').split(';')[0];
    assert.equal((await server.api('POST', '/api/loggedonly/joinChat', { chat: 'Main' }, cookie)).status, 200);
    for (let i = 0; i < 200; i += 1) {
      const sent = await server.api('POST', '/api/loggedonly/postMessage', { chat: 'Main', text: `old ${i}` }, cookie);
      assert.equal(sent.status, 200, sent.text);
    }
    browser = await launchBrowser();
    alice = await openPerson(browser);
    bob = await openPerson(browser);
    root = await openPerson(browser);
  });

  after(async () => {
    if (browser) await browser.close();
    if (server) await server.dispose();
  });

  test('scrolling to the top loads older messages back to the beginning, keeping the place', async () => {
    const { page } = alice;
    await guestLogin(page, server, 'alice');
    await joinOpenChat(page);
    await messageText(page, 'old 199').waitFor();
    const texts = page.locator('#messages .message-text');
    assert.equal(await texts.count(), 50, 'the join brings the last 50');
    for (let round = 0; round < 10; round += 1) {
      if (await page.locator('#history-status', { hasText: 'Beginning of the chat' }).count()) break;
      const before = await texts.count();
      await page.locator('#messages').evaluate((m) => { m.scrollTop = 0; });
      await page.waitForFunction(
        (n) => document.querySelectorAll('#messages .message-text').length > n
          || document.getElementById('history-status').textContent === 'Beginning of the chat',
        before,
      );
      const after = await texts.count();
      if (after > before) {
        // The messages that were on screen stay there: the view did not jump to the new top.
        assert.ok(await page.locator('#messages').evaluate((m) => m.scrollTop) > 0, 'scroll position kept');
      }
    }
    await page.locator('#history-status', { hasText: 'Beginning of the chat' }).waitFor();
    const all = await texts.allTextContents();
    assert.deepEqual(all, Array.from({ length: 200 }, (_, i) => `old ${i}`), 'no gap, no duplicate, in order');
    await screenshot(page, 'history-beginning');
    assertClean(page);
  });

  test('http and https addresses are links; a javascript: address stays text', async () => {
    const { page } = alice;
    await sendMessage(page, 'docs at https://example.com/guide?x=1, and javascript:alert(1) too');
    const message = page.locator('#messages .message').filter({ hasText: 'docs at' });
    const links = message.locator('a');
    assert.equal(await links.count(), 1);
    const link = links.first();
    assert.equal(await link.getAttribute('href'), 'https://example.com/guide?x=1');
    assert.equal(await link.getAttribute('target'), '_blank');
    assert.equal(await link.getAttribute('rel'), 'noopener noreferrer');
    assert.equal(await link.textContent(), 'https://example.com/guide?x=1');
    await sendMessage(page, 'javascript:alert(document.cookie)');
    const bare = page.locator('#messages .message').filter({ hasText: 'javascript:alert(document.cookie)' });
    assert.equal(await bare.locator('a').count(), 0);
    assert.equal(await page.locator('#messages a[href^="javascript"]').count(), 0);
    assertClean(page);
  });

  test('the author deletes a message and it vanishes in another tab', async () => {
    await guestLogin(bob.page, server, 'bob');
    await joinOpenChat(bob.page);
    await sendMessage(alice.page, 'I regret this message');
    await messageText(bob.page, 'I regret this message').waitFor();
    // bob may not delete alice's message: no control for it.
    const onBob = bob.page.locator('#messages .message').filter({ hasText: 'I regret this message' });
    assert.equal(await onBob.locator('.delete-button').count(), 0);

    const mine = alice.page.locator('#messages .message').filter({ hasText: 'I regret this message' });
    await mine.locator('.delete-button').click();
    await mine.locator('.delete-confirm').waitFor();
    await screenshot(alice.page, 'delete-confirm');
    await mine.locator('.delete-confirm').getByRole('button', { name: 'Delete', exact: true }).click();
    await messageText(alice.page, 'I regret this message').waitFor({ state: 'detached' });
    await messageText(bob.page, 'I regret this message').waitFor({ state: 'detached' });
    assertClean(alice.page);
    assertClean(bob.page);
  });

  test('an admin deletes anyone\'s message and it vanishes for the others', async () => {
    await root.page.goto(server.url);
    await signIn(root.page, 'root', 'root password 1');
    await waitForMainScreen(root.page, 'root');
    await joinOpenChat(root.page);
    await sendMessage(bob.page, 'something rude');
    await messageText(root.page, 'something rude').waitFor();
    await messageText(alice.page, 'something rude').waitFor();
    const rude = root.page.locator('#messages .message').filter({ hasText: 'something rude' });
    await rude.locator('.delete-button').click();
    await rude.locator('.delete-confirm').getByRole('button', { name: 'Delete', exact: true }).click();
    await messageText(alice.page, 'something rude').waitFor({ state: 'detached' });
    await messageText(bob.page, 'something rude').waitFor({ state: 'detached' });
    assertClean(root.page);
  });

  test('the title counts unread messages while the tab is hidden', async () => {
    await setHidden(alice.page, true);
    await sendMessage(bob.page, 'one');
    await sendMessage(bob.page, 'two');
    await sendMessage(bob.page, 'three');
    await alice.page.waitForFunction(() => document.title === '(3) natter');
    await setHidden(alice.page, false);
    await alice.page.waitForFunction(() => document.title === 'natter');
    assertClean(alice.page);
  });

  test('notifications: asked only after a click on the bell, shown while hidden', async () => {
    // A person who never clicks the bell is never asked.
    assert.equal(await alice.page.locator('#notify-button').getAttribute('aria-pressed'), 'false');

    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    context.setDefaultTimeout(10_000);
    await context.grantPermissions(['notifications'], { origin: server.url });
    await context.addInitScript(recordNotifications);
    const page = await watchPage(await context.newPage());
    try {
      await guestLogin(page, server, 'carol');
      await joinOpenChat(page);
      const bell = page.locator('#notify-button');
      assert.equal(await bell.getAttribute('aria-pressed'), 'false', 'off until asked for');
      await setHidden(page, true);
      await sendMessage(bob.page, 'nobody is told yet');
      await page.waitForFunction(() => document.title === '(1) natter');
      assert.deepEqual(await page.evaluate(() => window.shownNotifications), []);

      await setHidden(page, false);
      await bell.click();
      assert.equal(await bell.getAttribute('aria-pressed'), 'true');
      await setHidden(page, true);
      await sendMessage(bob.page, 'ping carol');
      await page.waitForFunction(() => window.shownNotifications.length === 1);
      assert.deepEqual(await page.evaluate(() => window.shownNotifications), [
        { title: 'bob in Main', body: 'ping carol' },
      ]);
      // Her own messages and a visible tab bring none.
      await setHidden(page, false);
      await sendMessage(bob.page, 'seen on screen');
      await messageText(page, 'seen on screen').waitFor();
      assert.equal(await page.evaluate(() => window.shownNotifications.length), 1);
      assert.equal(await page.evaluate(() => window.permissionRequests), 0, 'already granted: no prompt');
      assertClean(page);
    } finally {
      await context.close();
    }
  });

  test('an admin kicks a guest from the member list; the name is blocked', async () => {
    await member(root.page, 'bob').waitFor();
    const row = root.page.locator('#member-list .member').filter({ hasText: 'bob' });
    // Registered members cannot be kicked.
    assert.equal(await root.page.locator('#member-list .member').filter({ hasText: 'root' }).locator('.kick-button').count(), 0);
    await row.locator('.kick-button').click();
    await row.locator('.kick-confirm').getByRole('button', { name: 'Kick', exact: true }).click();
    await member(root.page, 'bob').waitFor({ state: 'detached' });
    await member(alice.page, 'bob').waitFor({ state: 'detached' });
    await bob.page.locator('#auth-screen').waitFor({ state: 'visible' });
    const panel = bob.page.locator('#panel-guest');
    await bob.page.getByRole('tab', { name: 'Guest' }).click();
    await panel.getByLabel('Pick a name').fill('BOB');
    await panel.getByRole('button', { name: 'Join as guest' }).click();
    await panel.locator('.form-error', { hasText: 'this name is blocked' }).waitFor();
    assertClean(root.page);
    assertClean(bob.page);
  });
});
