// Two guests chat in Main: messages both ways, member lists, system lines, unread counts, a second tab, leaving.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  assertClean, chatButton, guestLogin, joinOpenChat, launchBrowser, member, messageText, missingPrerequisite,
  NatterServer, openChat, openPerson, screenshot, sendMessage, systemLine, waitForCount, waitForMainScreen, watchPage,
} from './harness.mjs';

const skip = missingPrerequisite();

describe('guests chatting', { skip, timeout: 120_000 }, () => {
  let server;
  let browser;
  let alice;
  let bob;

  before(async () => {
    server = new NatterServer('guests', { chats: ['Main', 'Quiet', 'Random'] });
    await server.start();
    browser = await launchBrowser();
    alice = await openPerson(browser);
    bob = await openPerson(browser);
  });

  after(async () => {
    if (browser) await browser.close();
    if (server) await server.dispose();
  });

  test('a guest signs in and sees the chat list', async () => {
    const { page } = alice;
    await page.goto(server.url);
    await page.locator('#auth-screen').waitFor({ state: 'visible' });
    await screenshot(page, 'sign-in');
    const queueOpened = page.waitForRequest((request) => request.method() === 'POST'
      && request.url().endsWith('/api/loggedonly/queues'));
    await guestLogin(page, server, 'alice');
    // The tab's queue asks only for the event types the client acts on: no presence events.
    const asked = (await queueOpened).postDataJSON().event_types;
    assert.ok(asked.includes('MessageEvent') && asked.includes('ResyncEvent'), String(asked));
    assert.ok(!asked.includes('LoginEvent') && !asked.includes('LogoutEvent'), String(asked));
    await chatButton(page, 'Main').waitFor();
    await chatButton(page, 'Random').waitFor();
    // On a wide screen Main opens by itself, not joined yet.
    await page.locator('#chat-title', { hasText: 'Main' }).waitFor();
    assert.equal(await page.locator('#join-button').isVisible(), true);
    assert.equal(await page.locator('#message-input').isDisabled(), true);
    await screenshot(page, 'chat-not-joined');
    assertClean(page);
  });

  test('a name in use is refused next to the guest form', async () => {
    const intruder = await openPerson(browser);
    try {
      await intruder.page.goto(server.url);
      const panel = intruder.page.locator('#panel-guest');
      await panel.getByLabel('Pick a name').fill('alice');
      await panel.getByRole('button', { name: 'Join as guest' }).click();
      await panel.locator('.form-error', { hasText: 'user is already logged in' }).waitFor();
      await panel.getByLabel('Pick a name').fill('not a name');
      await panel.getByRole('button', { name: 'Join as guest' }).click();
      await panel.locator('.form-error', { hasText: 'invalid username' }).waitFor();
      assert.equal(await intruder.page.locator('#main-screen').isVisible(), false);
      assertClean(intruder.page);
    } finally {
      await intruder.context.close();
    }
  });

  test('both join Main and see each other in the member list', async () => {
    await openChat(alice.page, 'Main');
    await joinOpenChat(alice.page);
    await member(alice.page, 'alice').waitFor();

    await guestLogin(bob.page, server, 'bob');
    await openChat(bob.page, 'Main');
    await joinOpenChat(bob.page);
    await member(bob.page, 'alice').waitFor();
    await member(bob.page, 'bob').waitFor();

    // Alice sees bob arrive live, with a system line.
    await member(alice.page, 'bob').waitFor();
    await systemLine(alice.page, 'bob joined').waitFor();
    assert.equal(await alice.page.locator('#members-title').textContent(), 'Members (2)');
  });

  test('messages go both ways and keep their order', async () => {
    await sendMessage(alice.page, 'Hi bob, welcome to natter!');
    await messageText(bob.page, 'Hi bob, welcome to natter!').waitFor();

    await sendMessage(bob.page, 'Thanks alice. Is the long-poll fast?');
    await messageText(alice.page, 'Thanks alice. Is the long-poll fast?').waitFor();

    await sendMessage(alice.page, 'Instant.\nAnd newlines survive with Shift+Enter too.');
    await messageText(bob.page, 'Instant.\nAnd newlines survive with Shift+Enter too.').waitFor();

    for (const { page } of [alice, bob]) {
      const texts = await page.locator('#messages .message-text').allTextContents();
      assert.deepEqual(texts, [
        'Hi bob, welcome to natter!',
        'Thanks alice. Is the long-poll fast?',
        'Instant.\nAnd newlines survive with Shift+Enter too.',
      ]);
      // A message sent by this tab arrives once, although the post answer and the event both carry it.
      assert.equal(await page.locator('#messages .message').count(), 3);
    }
    await screenshot(alice.page, 'chat');
    assertClean(alice.page);
    assertClean(bob.page);
  });

  test('Shift+Enter adds a line, Enter sends', async () => {
    const input = bob.page.getByLabel('Message', { exact: true });
    await input.fill('first line');
    await input.press('Shift+Enter');
    await input.pressSequentially('second line');
    assert.equal(await input.inputValue(), 'first line\nsecond line');
    await input.press('Enter');
    await messageText(alice.page, 'first line\nsecond line').waitFor();
  });

  test('unread counts grow for joined chats that are not open, and clear on opening', async () => {
    await openChat(alice.page, 'Random');
    await joinOpenChat(alice.page);
    await openChat(alice.page, 'Main');

    await openChat(bob.page, 'Random');
    await joinOpenChat(bob.page);
    await sendMessage(bob.page, 'psst, over here');
    await sendMessage(bob.page, 'two unread now');

    const badge = chatButton(alice.page, 'Random').locator('.unread');
    await badge.getByText('2', { exact: true }).waitFor();
    assert.match(await alice.page.title(), /^\(2\) natter$/);
    await screenshot(alice.page, 'chat-unread');

    await openChat(alice.page, 'Random');
    await messageText(alice.page, 'two unread now').waitFor();
    await badge.waitFor({ state: 'detached' });
    assert.equal(await alice.page.title(), 'natter');
  });

  test('a second tab of the same person sees everything too', async () => {
    const second = await watchPage(await alice.context.newPage());
    try {
      await second.goto(server.url);
      await waitForMainScreen(second, 'alice');
      // The session was kept: alice is still in Main, with its history.
      await openChat(second, 'Main');
      await messageText(second, 'Hi bob, welcome to natter!').waitFor();
      assert.equal(await second.locator('#leave-button').isVisible(), true);

      await openChat(bob.page, 'Main');
      await sendMessage(bob.page, 'hello to both of your tabs');
      await messageText(second, 'hello to both of your tabs').waitFor();
      await openChat(alice.page, 'Main');
      await messageText(alice.page, 'hello to both of your tabs').waitFor();

      // And a message from the second tab shows in the first one.
      await sendMessage(second, 'written in tab two');
      await messageText(alice.page, 'written in tab two').waitFor();
      await messageText(bob.page, 'written in tab two').waitFor();

      // Joining in one tab shows up in the other: the membership is the person's, not the tab's.
      await openChat(alice.page, 'Quiet');
      await joinOpenChat(alice.page);
      await second.locator('#chat-list button.joined[data-chat="Quiet"]').waitFor();
      await openChat(second, 'Quiet');
      await second.locator('#leave-button').waitFor({ state: 'visible' });
      await member(second, 'alice').waitFor();
      await openChat(alice.page, 'Main');
      assertClean(second);
    } finally {
      await second.close();
    }
  });

  test('signing out in one tab signs out the other tabs of that browser', async () => {
    const other = await openPerson(browser);
    try {
      await guestLogin(other.page, server, 'gina');
      const second = await watchPage(await other.context.newPage());
      await second.goto(server.url);
      await waitForMainScreen(second, 'gina');
      await second.getByRole('button', { name: 'Sign out' }).click();
      await second.locator('#auth-screen').waitFor({ state: 'visible' });
      // The first tab learns it on its next request (at the latest when the parked poll returns).
      await other.page.locator('#auth-notice', { hasText: 'Your session has ended' }).waitFor({ timeout: 20_000 });
      await other.page.locator('#auth-screen').waitFor({ state: 'visible' });
      assert.equal(await other.page.locator('#main-screen').isVisible(), false);
      assertClean(other.page);
      assertClean(second);
    } finally {
      await other.context.close();
    }
  });

  test('leaving a chat updates the others live', async () => {
    await openChat(bob.page, 'Main');
    await bob.page.locator('#leave-button').click();
    await bob.page.locator('#join-button').waitFor({ state: 'visible' });
    await bob.page.locator('#not-joined').waitFor({ state: 'visible' });

    await systemLine(alice.page, 'bob left').waitFor();
    await member(alice.page, 'bob').waitFor({ state: 'detached' });
    assert.equal(await alice.page.locator('#members-title').textContent(), 'Members (1)');

    // Joining again brings the history back.
    await joinOpenChat(bob.page);
    await messageText(bob.page, 'written in tab two').waitFor();
    await member(alice.page, 'bob').waitFor();
    assertClean(alice.page);
    assertClean(bob.page);
  });

  test('signing out returns to the sign-in screen and frees the name', async () => {
    await bob.page.getByRole('button', { name: 'Sign out' }).click();
    await bob.page.locator('#auth-screen').waitFor({ state: 'visible' });
    await bob.page.locator('#auth-notice', { hasText: 'You have signed out.' }).waitFor();
    await member(alice.page, 'bob').waitFor({ state: 'detached' });
    await waitForCount(systemLine(alice.page, 'bob left'), 2);

    // A reload does not bring the old session back.
    await bob.page.reload();
    await bob.page.locator('#auth-screen').waitFor({ state: 'visible' });

    // The guest name is free again. Signing in twice on one page without a reload still gives one live
    // stream: every message shows once.
    for (let round = 0; round < 2; round += 1) {
      const panel = bob.page.locator('#panel-guest');
      await bob.page.getByRole('tab', { name: 'Guest' }).click();
      await panel.getByLabel('Pick a name').fill('bob');
      await panel.getByRole('button', { name: 'Join as guest' }).click();
      await waitForMainScreen(bob.page, 'bob');
      if (round === 0) {
        await bob.page.getByRole('button', { name: 'Sign out' }).click();
        await bob.page.locator('#auth-screen').waitFor({ state: 'visible' });
      }
    }
    await openChat(bob.page, 'Main');
    await joinOpenChat(bob.page);
    await sendMessage(alice.page, 'welcome back, bob');
    await messageText(bob.page, 'welcome back, bob').waitFor();
    await sendMessage(bob.page, 'glad to be back');
    await messageText(alice.page, 'glad to be back').waitFor();
    assert.equal(await messageText(bob.page, 'welcome back, bob').count(), 1);
    assert.equal(await systemLine(bob.page, 'You joined').count(), 1);
    assertClean(alice.page);
    assertClean(bob.page);
  });
});
