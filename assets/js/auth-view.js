// The sign-in screen: guest name, password sign-in, registration and the two-step password reset.

import { api } from './api.js';
import { byId, setError, show, whileBusy } from './dom.js';

const LAST_USER_KEY = 'natter.lastUser';

function rememberUser(name) {
  try {
    localStorage.setItem(LAST_USER_KEY, name);
  } catch {
    // Storage can be off (private mode); remembering the name is only a convenience.
  }
}

function rememberedUser() {
  try {
    return localStorage.getItem(LAST_USER_KEY) || '';
  } catch {
    return '';
  }
}

const value = (id) => byId(id).value;
const trimmed = (id) => byId(id).value.trim();

export class AuthView {
  /** @param {{onSignedIn: (user: object) => void}} handlers */
  constructor({ onSignedIn }) {
    this.onSignedIn = onSignedIn;
    this.screen = byId('auth-screen');
    this.notice = byId('auth-notice');
    this.tabs = [byId('tab-guest'), byId('tab-signin'), byId('tab-register')];
    this.panels = {
      guest: byId('panel-guest'),
      signin: byId('panel-signin'),
      register: byId('panel-register'),
      reset: byId('panel-reset'),
    };
    this.bindTabs();
    this.bindGuest();
    this.bindSignIn();
    this.bindRegister();
    this.bindReset();
  }

  /** Shows the sign-in screen, with an optional notice ("your session has ended"). */
  open(notice = '') {
    this.setNotice(notice);
    const last = rememberedUser();
    if (last) {
      byId('signin-name').value = last;
      this.select('signin', false);
    } else {
      this.select('guest', false);
    }
    show(this.screen);
    this.focusFirstField();
  }

  close() {
    show(this.screen, false);
  }

  setNotice(text, kind = '') {
    this.notice.textContent = text;
    this.notice.className = kind ? `notice ${kind}` : 'notice';
    show(this.notice, !!text);
  }

  focusFirstField() {
    const panel = Object.values(this.panels).find((p) => !p.hidden);
    const field = panel && [...panel.querySelectorAll('input')].find((input) => !input.closest('[hidden]') && !input.value);
    const target = field || (panel && panel.querySelector('input:not([type="hidden"])'));
    if (target) target.focus();
  }

  // Tabs follow the WAI-ARIA pattern: one tab stop, arrow keys move between tabs.
  bindTabs() {
    this.tabs.forEach((tab, index) => {
      tab.addEventListener('click', () => {
        this.setNotice('');
        this.select(tab.id.slice(4));
      });
      tab.addEventListener('keydown', (event) => {
        let next = null;
        if (event.key === 'ArrowRight') next = (index + 1) % this.tabs.length;
        else if (event.key === 'ArrowLeft') next = (index - 1 + this.tabs.length) % this.tabs.length;
        else if (event.key === 'Home') next = 0;
        else if (event.key === 'End') next = this.tabs.length - 1;
        if (next === null) return;
        event.preventDefault();
        this.select(this.tabs[next].id.slice(4), false);
        this.tabs[next].focus();
      });
    });
  }

  /** Shows one panel: 'guest', 'signin', 'register' or 'reset'. */
  select(name, focus = true) {
    for (const tab of this.tabs) {
      const selected = tab.id === `tab-${name}`;
      tab.setAttribute('aria-selected', String(selected));
      tab.tabIndex = selected || (name === 'reset' && tab.id === 'tab-signin') ? 0 : -1;
    }
    for (const [key, panel] of Object.entries(this.panels)) show(panel, key === name);
    if (name === 'register') {
      show(byId('register-form'));
      show(byId('register-done'), false);
    }
    if (focus) this.focusFirstField();
  }

  bindGuest() {
    const form = byId('guest-form');
    const error = byId('guest-error');
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      setError(error, '');
      const user = trimmed('guest-name');
      if (!user) {
        setError(error, 'Please pick a name.');
        byId('guest-name').focus();
        return;
      }
      try {
        const me = await whileBusy(form, () => api.guestLogin(user));
        this.onSignedIn(me);
      } catch (err) {
        setError(error, err.message);
        byId('guest-name').focus();
      }
    });
  }

  bindSignIn() {
    const form = byId('signin-form');
    const error = byId('signin-error');
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      setError(error, '');
      const user = trimmed('signin-name');
      const password = value('signin-password');
      if (!user || !password) {
        setError(error, 'Please enter your username and password.');
        byId(user ? 'signin-password' : 'signin-name').focus();
        return;
      }
      try {
        const me = await whileBusy(form, () => api.authorize(user, password));
        rememberUser(me.user || user);
        byId('signin-password').value = '';
        this.onSignedIn(me);
      } catch (err) {
        setError(error, err.message);
        byId('signin-password').focus();
      }
    });
    byId('forgot-button').addEventListener('click', () => {
      byId('reset-request-name').value = trimmed('signin-name');
      this.openReset();
    });
  }

  bindRegister() {
    const form = byId('register-form');
    const error = byId('register-error');
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      setError(error, '');
      const user = trimmed('register-name');
      const email = trimmed('register-email');
      const password = value('register-password');
      if (!user || !email || !password) {
        setError(error, 'Please fill in all three fields.');
        return;
      }
      try {
        await whileBusy(form, () => api.register(user, email, password));
      } catch (err) {
        setError(error, err.message);
        return;
      }
      rememberUser(user);
      byId('register-password').value = '';
      byId('register-done-email').textContent = email;
      byId('register-done-user').textContent = user;
      show(form, false);
      show(byId('register-done'));
      byId('register-done-title').focus();
    });
    byId('register-done-signin').addEventListener('click', () => {
      byId('signin-name').value = trimmed('register-name');
      this.select('signin');
    });
  }

  openReset() {
    this.setNotice('');
    for (const tab of this.tabs) tab.setAttribute('aria-selected', 'false');
    for (const [key, panel] of Object.entries(this.panels)) show(panel, key === 'reset');
    show(byId('reset-request-form'));
    show(byId('reset-have-code'));
    show(byId('reset-form'), false);
    show(byId('reset-sent'), false);
    setError(byId('reset-request-error'), '');
    setError(byId('reset-error'), '');
    byId('reset-request-name').focus();
  }

  showResetStep(sent) {
    byId('reset-name').value = trimmed('reset-request-name') || byId('reset-name').value;
    setError(byId('reset-error'), '');
    show(byId('reset-sent'), sent);
    show(byId('reset-request-form'), false);
    show(byId('reset-have-code'), false);
    show(byId('reset-form'));
    byId(byId('reset-name').value ? 'reset-token' : 'reset-name').focus();
  }

  bindReset() {
    const requestForm = byId('reset-request-form');
    const requestError = byId('reset-request-error');
    requestForm.addEventListener('submit', async (event) => {
      event.preventDefault();
      setError(requestError, '');
      const user = trimmed('reset-request-name');
      if (!user) {
        setError(requestError, 'Please enter your username.');
        byId('reset-request-name').focus();
        return;
      }
      try {
        await whileBusy(requestForm, () => api.requestResetPassword(user));
      } catch (err) {
        setError(requestError, err.message);
        return;
      }
      this.showResetStep(true);
    });
    byId('reset-have-code').addEventListener('click', () => this.showResetStep(false));
    byId('reset-again').addEventListener('click', () => {
      byId('reset-request-name').value = trimmed('reset-name') || trimmed('reset-request-name');
      this.openReset();
    });

    const form = byId('reset-form');
    const error = byId('reset-error');
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      setError(error, '');
      const user = trimmed('reset-name');
      const token = trimmed('reset-token');
      const password = value('reset-password');
      if (!user || !token || !password) {
        setError(error, 'Please fill in your username, the code and a new password.');
        return;
      }
      try {
        await whileBusy(form, () => api.resetPassword(user, token, password));
      } catch (err) {
        setError(error, err.message);
        return;
      }
      byId('reset-token').value = '';
      byId('reset-password').value = '';
      byId('signin-name').value = user;
      byId('signin-password').value = '';
      rememberUser(user);
      this.select('signin');
      this.setNotice('Your password has been changed. Sign in with the new one.', 'success');
    });
    byId('reset-back').addEventListener('click', () => this.select('signin'));
  }
}
