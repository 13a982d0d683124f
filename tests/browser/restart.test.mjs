// The page survives a server restart and a lost event queue without a reload and without losing a message.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  assertClean, guestLogin, joinOpenChat, launchBrowser, member, messageText, missingPrerequisite, NatterServer,
  openChat, openPerson, screenshot, sendMessage,
} from './harness.mjs';

const skip = missingPrerequisite();

describe('reconnection and resync', { skip, timeout: 120_000 }, () => {
  let server;
  let browser;
  let erin;
  let frank;

  before(async () => {
    server = new NatterServer('restart');
    await server.start();
    browser = await launchBrowser();
    erin = await openPerson(browser);
    frank = await openPerson(browser);
    for (const [person, name] of [[erin, 'erin'], [frank, 'frank']]) {
      await guestLogin(person.page, server, name);
      await openChat(person.page, 'Main');
      await joinOpenChat(person.page);
    }
    await member(erin.page, 'frank').waitFor();
    await sendMessage(erin.page, 'before the restart');
    await messageText(frank.page, 'before the restart').waitFor();
    // Set in the page: still there afterwards proves the page was never reloaded.
    await erin.page.evaluate(() => { window.sameDocument = 'yes'; });
  });

  after(async () => {
    if (browser) await browser.close();
    if (server) await server.dispose();
  });

  test('a graceful restart shows "reconnecting", then everything carries on', async () => {
    const stopped = await server.stop();
    assert.equal(stopped.code, 0, 'natter exits 0 on SIGTERM');
    await erin.page.locator('#conn-status[data-status="reconnecting"]').waitFor();
    assert.equal(await erin.page.locator('#conn-status').textContent(), 'Reconnecting…');
    // Posting while the server is away fails in place and keeps the text for another try.
    const input = erin.page.getByLabel('Message', { exact: true });
    await input.fill('sent while the server is down');
    await input.press('Enter');
    await erin.page.locator('#composer-error', { hasText: 'cannot reach the server' }).waitFor();
    assert.equal(await input.inputValue(), 'sent while the server is down');
    await screenshot(erin.page, 'reconnecting');

    await server.start();
    // frank posts as soon as the server is back, possibly before erin's page has reconnected.
    await sendMessage(frank.page, 'right after the restart');

    await erin.page.locator('#conn-status[data-status="live"]').waitFor({ state: 'attached', timeout: 20_000 });
    await messageText(erin.page, 'right after the restart').waitFor();
    assert.equal(await erin.page.locator('#auth-screen').isVisible(), false, 'still signed in');

    // The kept text is sent now.
    await input.press('Enter');
    await messageText(frank.page, 'sent while the server is down').waitFor();
    await erin.page.locator('#composer-error').waitFor({ state: 'hidden' });

    await sendMessage(frank.page, 'and the live stream works again');
    await messageText(erin.page, 'and the live stream works again').waitFor();
    assert.equal(await erin.page.evaluate(() => window.sameDocument), 'yes', 'no reload');

    const texts = await erin.page.locator('#messages .message-text').allTextContents();
    assert.deepEqual(texts, [
      'before the restart',
      'right after the restart',
      'sent while the server is down',
      'and the live stream works again',
    ]);
    await member(erin.page, 'frank').waitFor();
    assertClean(erin.page);
    assertClean(frank.page);
  });

  test('a lost event queue is replaced and the state refetched, without losing a message', async () => {
    const { page } = erin;
    let spoiled = false;
    // Point one poll at a queue the server does not know: the answer is 400 "bad event queue id".
    await page.route('**/api/loggedonly/events?*', async (route) => {
      if (spoiled) return route.continue();
      spoiled = true;
      const url = new URL(route.request().url());
      url.searchParams.set('queue_id', 'no-such-queue');
      return route.continue({ url: url.toString() });
    });
    const newQueue = page.waitForRequest((request) => request.method() === 'POST'
      && request.url().endsWith('/api/loggedonly/queues'));
    const refetch = page.waitForRequest((request) => request.url().endsWith('/api/loggedonly/getChats'));
    // Awaited below; until then a failure elsewhere must not leave them rejecting unobserved.
    newQueue.catch(() => {});
    refetch.catch(() => {});
    // Wake the parked poll so the next one goes through the route.
    await sendMessage(frank.page, 'wake up');
    await messageText(page, 'wake up').waitFor();
    await newQueue;
    await refetch;
    await page.unroute('**/api/loggedonly/events?*');

    await sendMessage(frank.page, 'after the resync');
    await messageText(page, 'after the resync').waitFor();
    await page.locator('#conn-status[data-status="live"]').waitFor({ state: 'attached' });
    assert.equal(await page.locator('#messages .message-text').getByText('wake up', { exact: true }).count(), 1);
    assert.equal(await page.evaluate(() => window.sameDocument), 'yes', 'no reload');
    assertClean(page);
  });

  test('after a crash the page gets a new queue and the history fills the gap', async () => {
    const { page } = erin;
    const killed = await server.kill();
    assert.equal(killed.signal, 'SIGKILL');
    await page.locator('#conn-status[data-status="reconnecting"]').waitFor();
    await server.start();
    // Queues do not survive a crash: the next poll is refused and the client rebuilds its state.
    const newQueue = page.waitForRequest((request) => request.method() === 'POST'
      && request.url().endsWith('/api/loggedonly/queues'), { timeout: 20_000 });
    newQueue.catch(() => {});
    await sendMessage(frank.page, 'posted right after the crash');
    await newQueue;
    await page.locator('#conn-status[data-status="live"]').waitFor({ state: 'attached', timeout: 20_000 });
    await messageText(page, 'posted right after the crash').waitFor();

    await sendMessage(page, 'erin is back');
    await messageText(frank.page, 'erin is back').waitFor();
    await sendMessage(frank.page, 'live again after the crash');
    await messageText(page, 'live again after the crash').waitFor();
    assert.equal(await page.evaluate(() => window.sameDocument), 'yes', 'no reload');
    await member(page, 'frank').waitFor();
    assertClean(page);
    assertClean(frank.page);
  });
});
