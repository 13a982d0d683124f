// Text stays text, the keyboard is enough, a phone-sized screen works, and the colours follow the system.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  assertClean, guestLogin, joinOpenChat, launchBrowser, member, messageText, missingPrerequisite, NatterServer,
  openChat, openPerson, screenshot, sendMessage, waitForMainScreen,
} from './harness.mjs';

const skip = missingPrerequisite();

const PAYLOADS = [
  '<img src=x onerror=alert(1)>',
  '<script>alert(2)</script>',
  '"><svg onload=alert(3)>',
  '<b>bold?</b> &amp; <a href="javascript:alert(4)">link</a>',
];

describe('the page as a person uses it', { skip, timeout: 120_000 }, () => {
  let server;
  let browser;

  before(async () => {
    server = new NatterServer('ui');
    await server.start();
    browser = await launchBrowser();
  });

  after(async () => {
    if (browser) await browser.close();
    if (server) await server.dispose();
  });

  test('markup in messages and names is shown as text and never runs', async () => {
    const mallory = await openPerson(browser);
    const victim = await openPerson(browser);
    try {
      for (const [person, name] of [[mallory, 'mallory'], [victim, 'victim']]) {
        await guestLogin(person.page, server, name);
        await openChat(person.page, 'Main');
        await joinOpenChat(person.page);
      }
      for (const payload of PAYLOADS) await sendMessage(mallory.page, payload);
      for (const { page } of [mallory, victim]) {
        for (const payload of PAYLOADS) await messageText(page, payload).waitFor();
        const texts = await page.locator('#messages .message-text').allTextContents();
        assert.deepEqual(texts, PAYLOADS);
        assert.equal(await page.locator('#messages img, #messages script, #messages svg, #messages b, #messages a').count(), 0);
        assertClean(page);
      }
      // A reload renders the same text from history, again without running it.
      await victim.page.reload();
      await waitForMainScreen(victim.page, 'victim');
      for (const payload of PAYLOADS) await messageText(victim.page, payload).waitFor();
      await screenshot(victim.page, 'xss-as-text');
      assertClean(victim.page);
    } finally {
      await mallory.context.close();
      await victim.context.close();
    }
  });

  test('the keyboard alone signs in, joins, writes and signs out', async () => {
    const { context, page } = await openPerson(browser);
    try {
      await page.goto(server.url);
      await page.locator('#auth-screen').waitFor({ state: 'visible' });
      // Focus starts in the name field of the guest tab.
      assert.equal(await page.evaluate(() => document.activeElement.id), 'guest-name');
      // Arrow keys move between the tabs, Tab goes from the tabs into the form.
      await page.keyboard.press('Shift+Tab');
      assert.equal(await page.evaluate(() => document.activeElement.id), 'tab-guest');
      await page.keyboard.press('ArrowRight');
      assert.equal(await page.evaluate(() => document.activeElement.id), 'tab-signin');
      await page.locator('#panel-signin').waitFor({ state: 'visible' });
      await page.keyboard.press('ArrowLeft');
      await page.keyboard.press('Tab');
      assert.equal(await page.evaluate(() => document.activeElement.id), 'guest-name');

      await page.keyboard.type('kim');
      await page.keyboard.press('Enter');
      await waitForMainScreen(page, 'kim');
      // After signing in, focus lands on the Join button of the open chat.
      await page.waitForFunction(() => document.activeElement && document.activeElement.id === 'join-button');
      await page.keyboard.press('Enter');
      await page.locator('#leave-button').waitFor({ state: 'visible' });
      await page.waitForFunction(() => document.activeElement && document.activeElement.id === 'message-input');
      await page.keyboard.type('typed, never clicked');
      await page.keyboard.press('Enter');
      await messageText(page, 'typed, never clicked').waitFor();
      await member(page, 'kim').waitFor();

      // Tab moves on from the message field to Send, then to the member list side.
      await page.keyboard.press('Tab');
      assert.equal(await page.evaluate(() => document.activeElement.id), 'send-button');

      // Walk backwards to the Sign out button and press it.
      let reached = false;
      for (let i = 0; i < 20 && !reached; i += 1) {
        await page.keyboard.press('Shift+Tab');
        reached = await page.evaluate(() => document.activeElement.id === 'logout-button');
      }
      assert.ok(reached, 'Sign out is reachable with the keyboard');
      const visible = await page.evaluate(() => {
        const style = getComputedStyle(document.activeElement);
        return style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0;
      });
      assert.ok(visible, 'the focused control shows a focus ring');
      await screenshot(page, 'keyboard-focus');
      await page.keyboard.press('Enter');
      await page.locator('#auth-screen').waitFor({ state: 'visible' });
      assertClean(page);
    } finally {
      await context.close();
    }
  });

  test('a phone-sized screen shows the list, then the chat, and back', async () => {
    const { context, page } = await openPerson(browser, { viewport: { width: 375, height: 667 } });
    const other = await openPerson(browser);
    try {
      await page.goto(server.url);
      await page.locator('#auth-screen').waitFor({ state: 'visible' });
      await screenshot(page, 'phone-sign-in');
      await guestLogin(page, server, 'pat');
      // The chat list comes first on a phone.
      await page.locator('#sidebar').waitFor({ state: 'visible' });
      assert.equal(await page.locator('#chat-view').isVisible(), false);
      await screenshot(page, 'phone-chat-list');

      await openChat(page, 'Main');
      assert.equal(await page.locator('#sidebar').isVisible(), false);
      await joinOpenChat(page);
      await guestLogin(other.page, server, 'quinn');
      await openChat(other.page, 'Main');
      await joinOpenChat(other.page);
      await sendMessage(other.page, 'Hello from a big screen');
      await messageText(page, 'Hello from a big screen').waitFor();
      await sendMessage(page, 'Hello from a small one, with a longer line that has to wrap on a narrow phone screen');

      // Nothing sticks out sideways.
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `no horizontal scrolling (overflow ${overflow}px)`);
      const composer = await page.locator('#composer').boundingBox();
      assert.ok(composer && composer.y + composer.height <= 667, 'the composer is on screen');
      await screenshot(page, 'phone-chat');

      // Members fold out on demand.
      assert.equal(await page.locator('#members').isVisible(), false);
      await page.getByRole('button', { name: /Members/ }).click();
      await member(page, 'quinn').waitFor();
      await screenshot(page, 'phone-members');

      await page.getByRole('button', { name: 'Chats' }).click();
      await page.locator('#sidebar').waitFor({ state: 'visible' });
      assertClean(page);
    } finally {
      await context.close();
      await other.context.close();
    }
  });

  test('light and dark colour schemes follow the system', async () => {
    const light = await openPerson(browser, { colorScheme: 'light' });
    const dark = await openPerson(browser, { colorScheme: 'dark' });
    try {
      const background = (page) => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
      for (const [person, name] of [[light, 'sunny'], [dark, 'nighty']]) {
        await guestLogin(person.page, server, name);
        await openChat(person.page, 'Main');
        await joinOpenChat(person.page);
      }
      await sendMessage(light.page, 'Good morning');
      await sendMessage(dark.page, 'Good evening');
      await messageText(light.page, 'Good evening').waitFor();
      await messageText(dark.page, 'Good morning').waitFor();
      const lightBg = await background(light.page);
      const darkBg = await background(dark.page);
      assert.notEqual(lightBg, darkBg);
      const luminance = (rgb) => rgb.match(/\d+/g).slice(0, 3).map(Number).reduce((a, b) => a + b, 0);
      assert.ok(luminance(lightBg) > 600, `light background is light (${lightBg})`);
      assert.ok(luminance(darkBg) < 150, `dark background is dark (${darkBg})`);
      await screenshot(light.page, 'chat-light');
      await screenshot(dark.page, 'chat-dark');
      assertClean(light.page);
      assertClean(dark.page);
    } finally {
      await light.context.close();
      await dark.context.close();
    }
  });

  test('a page load asks for the session without an error status, signed out or in', async () => {
    const { context, page } = await openPerson(browser);
    // Chromium prints every API answer with an error status in the console, where operators see it.
    const failed = [];
    page.on('response', (response) => {
      if (response.url().includes('/api/') && response.status() >= 400) {
        failed.push(`${response.status()} ${new URL(response.url()).pathname}`);
      }
    });
    try {
      await guestLogin(page, server, 'loader');
      await page.reload();
      await waitForMainScreen(page, 'loader');
      await page.locator('#logout-button').click();
      await page.locator('#auth-screen').waitFor({ state: 'visible' });
      await page.reload();
      await page.locator('#auth-screen').waitFor({ state: 'visible' });
      assert.deepEqual(failed, []);
      assertClean(page);
    } finally {
      await context.close();
    }
  });
});
