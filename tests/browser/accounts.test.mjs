// A registered account: sign up, "check your email", verify through the logged link, sign in, reset the password.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  assertClean, launchBrowser, missingPrerequisite, NatterServer, openPerson, screenshot, signIn, waitForMainScreen,
} from './harness.mjs';

const skip = missingPrerequisite();

describe('registered accounts', { skip, timeout: 120_000 }, () => {
  let server;
  let browser;
  let carol;

  before(async () => {
    server = new NatterServer('accounts');
    await server.start();
    browser = await launchBrowser();
    carol = await openPerson(browser);
  });

  after(async () => {
    if (browser) await browser.close();
    if (server) await server.dispose();
  });

  test('registration errors are shown next to the form', async () => {
    const { page } = carol;
    await page.goto(server.url);
    await page.getByRole('tab', { name: 'Register' }).click();
    const panel = page.locator('#panel-register');
    await panel.getByLabel('Username').fill('carol');
    await panel.getByLabel('Email').fill('carol@example.com');
    await panel.getByLabel('Password').fill('short');
    await panel.getByRole('button', { name: 'Create account' }).click();
    await panel.locator('.form-error', { hasText: 'password must be 8 to 128 characters' }).waitFor();

    await panel.getByLabel('Email').fill('not-an-address');
    await panel.getByLabel('Password').fill('correct horse battery');
    await panel.getByRole('button', { name: 'Create account' }).click();
    await panel.locator('.form-error', { hasText: 'invalid email' }).waitFor();
    assertClean(page);
  });

  test('registering shows the check-your-email notice', async () => {
    const { page } = carol;
    const panel = page.locator('#panel-register');
    await panel.getByLabel('Email').fill('carol@example.com');
    await panel.getByRole('button', { name: 'Create account' }).click();
    await panel.getByRole('heading', { name: 'Check your email' }).waitFor();
    await panel.locator('#register-done-email', { hasText: 'carol@example.com' }).waitFor();
    assert.equal(await panel.locator('.form-error').isVisible(), false);
    await screenshot(page, 'register-check-email');
  });

  test('signing in before verifying says so next to the form', async () => {
    const { page } = carol;
    await page.getByRole('button', { name: 'Go to sign in' }).click();
    const panel = page.locator('#panel-signin');
    assert.equal(await panel.getByLabel('Username').inputValue(), 'carol');
    await panel.getByLabel('Password').fill('wrong password!');
    await panel.getByRole('button', { name: 'Sign in', exact: true }).click();
    await panel.locator('.form-error', { hasText: 'wrong username or password' }).waitFor();

    await panel.getByLabel('Password').fill('correct horse battery');
    await panel.getByRole('button', { name: 'Sign in', exact: true }).click();
    await panel.locator('.form-error', { hasText: 'email is not verified' }).waitFor();
    await screenshot(page, 'sign-in-error');
    assert.equal(await page.locator('#main-screen').isVisible(), false);
    assertClean(page);
  });

  test('the activation link verifies the account and leads back to sign in', async () => {
    const { page } = carol;
    const link = await server.activationLink('carol');
    await page.goto(link);
    await page.getByText(/verified/i).first().waitFor();
    await screenshot(page, 'email-verified');
    const back = page.locator('a[href="/"]').first();
    await back.click();
    await page.locator('#auth-screen').waitFor({ state: 'visible' });
    // The browser remembers who registered here, so sign-in is ready with the name.
    await page.locator('#panel-signin').waitFor({ state: 'visible' });
    assert.equal(await page.locator('#signin-name').inputValue(), 'carol');
  });

  test('the verified account signs in, with its badge', async () => {
    const { page } = carol;
    await signIn(page, 'carol', 'correct horse battery');
    await waitForMainScreen(page, 'carol');
    await page.locator('#me-badges .badge-verified').waitFor();
    assert.equal(await page.locator('#create-chat-form').isVisible(), false, 'no admin controls for a user');

    // A reload keeps the session (cookie) and the chat membership.
    await page.locator('#join-button').click();
    await page.locator('#leave-button').waitFor({ state: 'visible' });
    await page.reload();
    await waitForMainScreen(page, 'carol');
    await page.locator('#leave-button').waitFor({ state: 'visible' });
    assertClean(page);

    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.locator('#auth-screen').waitFor({ state: 'visible' });
  });

  test('a forgotten password is reset with the mailed code', async () => {
    const { page } = carol;
    await page.getByRole('tab', { name: 'Sign in' }).click();
    await page.getByRole('button', { name: 'Forgot your password?' }).click();
    const panel = page.locator('#panel-reset');
    await panel.getByRole('heading', { name: 'Reset your password' }).waitFor();
    const from = server.mark();
    await panel.locator('#reset-request-form').getByLabel('Username').fill('carol');
    await panel.getByRole('button', { name: 'Email me a reset code' }).click();

    const resetForm = panel.locator('#reset-form');
    await resetForm.waitFor({ state: 'visible' });
    await resetForm.locator('#reset-sent').waitFor({ state: 'visible' });
    assert.equal(await resetForm.getByLabel('Username').inputValue(), 'carol');
    const token = await server.resetToken(from);

    // A wrong code is refused in place.
    await resetForm.getByLabel('Reset code').fill('AAAAAAAAAAAAAAAAAAAA');
    await resetForm.getByLabel('New password').fill('a brand new passphrase');
    await resetForm.getByRole('button', { name: 'Set new password' }).click();
    await resetForm.locator('.form-error', { hasText: 'bad reset password token' }).waitFor();
    await screenshot(page, 'reset-password');

    await resetForm.getByLabel('Reset code').fill(token);
    await resetForm.getByRole('button', { name: 'Set new password' }).click();
    await page.locator('#auth-notice', { hasText: 'Your password has been changed' }).waitFor();

    const signin = page.locator('#panel-signin');
    await signin.waitFor({ state: 'visible' });
    await signin.getByLabel('Password').fill('correct horse battery');
    await signin.getByRole('button', { name: 'Sign in', exact: true }).click();
    await signin.locator('.form-error', { hasText: 'wrong username or password' }).waitFor();

    await signIn(page, 'carol', 'a brand new passphrase');
    await waitForMainScreen(page, 'carol');
    assertClean(page);
  });
});
