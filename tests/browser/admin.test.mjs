// An admin creates and removes chats; another person sees them appear and vanish live.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  assertClean, chatButton, guestLogin, joinOpenChat, launchBrowser, messageText, missingPrerequisite, NatterServer,
  openChat, openPerson, screenshot, sendMessage, signIn, waitForMainScreen,
} from './harness.mjs';

const skip = missingPrerequisite();

describe('admin chat management', { skip, timeout: 120_000 }, () => {
  let server;
  let browser;
  let root;
  let dave;

  before(async () => {
    server = new NatterServer('admin', { admins: ['root'] });
    await server.start();
    await server.registerVerified('root', 'root@example.com', 'root password 1');
    browser = await launchBrowser();
    root = await openPerson(browser);
    dave = await openPerson(browser);
  });

  after(async () => {
    if (browser) await browser.close();
    if (server) await server.dispose();
  });

  test('an admin sees the admin controls, a guest does not', async () => {
    await root.page.goto(server.url);
    await signIn(root.page, 'root', 'root password 1');
    await waitForMainScreen(root.page, 'root');
    await root.page.locator('#me-badges .badge-admin').waitFor();
    await root.page.locator('#create-chat-form').waitFor({ state: 'visible' });
    await root.page.getByRole('button', { name: 'Remove chat' }).waitFor();

    await guestLogin(dave.page, server, 'dave');
    assert.equal(await dave.page.locator('#create-chat-form').isVisible(), false);
    assert.equal(await dave.page.locator('#remove-chat-button').isVisible(), false);
  });

  test('a created chat appears live for everyone', async () => {
    const form = root.page.locator('#create-chat-form');
    await form.getByLabel('New chat').fill('Launch plans');
    await form.getByRole('button', { name: 'Create' }).click();
    await chatButton(root.page, 'Launch plans').waitFor();
    // The creator lands in the new chat.
    await root.page.locator('#chat-title', { hasText: 'Launch plans' }).waitFor();

    await chatButton(dave.page, 'Launch plans').waitFor();
    const names = await dave.page.locator('#chat-list .chat-name').allTextContents();
    assert.deepEqual(names, ['Launch plans', 'Main']);
  });

  test('admin errors are shown next to the create form', async () => {
    const form = root.page.locator('#create-chat-form');
    await form.getByLabel('New chat').fill('main');
    await form.getByRole('button', { name: 'Create' }).click();
    await form.locator('.form-error', { hasText: 'chat already exists' }).waitFor();
    await screenshot(root.page, 'admin');
  });

  test('both talk in the new chat, then the admin removes it and it vanishes live', async () => {
    await joinOpenChat(root.page);
    await openChat(dave.page, 'Launch plans');
    await joinOpenChat(dave.page);
    await sendMessage(root.page, 'This chat self-destructs.');
    await messageText(dave.page, 'This chat self-destructs.').waitFor();

    await root.page.getByRole('button', { name: 'Remove chat' }).click();
    await root.page.locator('#remove-confirm').waitFor({ state: 'visible' });
    await screenshot(root.page, 'admin-remove-confirm');
    await root.page.locator('#remove-confirm').getByRole('button', { name: 'Remove', exact: true }).click();
    await chatButton(root.page, 'Launch plans').waitFor({ state: 'detached' });
    await root.page.locator('#chat-placeholder', { hasText: 'was removed' }).waitFor();

    await chatButton(dave.page, 'Launch plans').waitFor({ state: 'detached' });
    await dave.page.locator('#chat-placeholder', { hasText: '“Launch plans” was removed.' }).waitFor();
    assert.deepEqual(await dave.page.locator('#chat-list .chat-name').allTextContents(), ['Main']);
  });

  test('a chat made again with the same name starts empty', async () => {
    const form = root.page.locator('#create-chat-form');
    await form.getByLabel('New chat').fill('Launch plans');
    await form.getByRole('button', { name: 'Create' }).click();
    await chatButton(dave.page, 'Launch plans').waitFor();
    await openChat(dave.page, 'Launch plans');
    await joinOpenChat(dave.page);
    await dave.page.locator('#leave-button').waitFor();
    assert.equal(await dave.page.locator('#messages .message').count(), 0);
    assertClean(root.page);
    assertClean(dave.page);
  });
});
