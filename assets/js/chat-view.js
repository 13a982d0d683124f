// The main screen: chat list, the open chat's timeline and members, the composer and the admin controls.

import { byId, el, isWide, linkified, setError, show } from './dom.js';

const NAME_COLORS = 8;
const GROUP_SECONDS = 5 * 60;
const NEAR_BOTTOM_PX = 48;
// Older messages load when the timeline is scrolled this close to its top.
const NEAR_TOP_PX = 120;

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayTimeFormat = new Intl.DateTimeFormat(undefined, {
  month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
});
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'medium' });

function timeElement(seconds) {
  const date = new Date(seconds * 1000);
  if (!Number.isFinite(date.getTime())) return null;
  const sameDay = date.toDateString() === new Date().toDateString();
  return el('time', {
    class: 'item-time',
    text: (sameDay ? timeFormat : dayTimeFormat).format(date),
    attrs: { datetime: date.toISOString(), title: fullFormat.format(date) },
  });
}

/** A stable colour class for a user name. */
function nameColor(name) {
  let hash = 0;
  for (const ch of name.toLowerCase()) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return `name-${hash % NAME_COLORS}`;
}

function badge(kind, label, symbol) {
  return el('span', { class: `badge badge-${kind}`, attrs: { title: label } }, [
    el('span', { text: symbol, attrs: { 'aria-hidden': 'true' } }),
    el('span', { class: 'visually-hidden', text: ` (${label})` }),
  ]);
}

/** Badges for a user's status flags (verified, admin, bot). */
export function statusBadges(status) {
  const badges = [];
  if (status.verified) badges.push(badge('verified', 'verified', '✓'));
  if (status.admin) badges.push(badge('admin', 'admin', 'admin'));
  if (status.bot) badges.push(badge('bot', 'bot', 'bot'));
  return badges;
}

function continues(previous, item) {
  return !!previous && previous.kind === 'message' && item.kind === 'message'
    && previous.message.user.toLowerCase() === item.message.user.toLowerCase()
    && item.message.time - previous.message.time < GROUP_SECONDS;
}

export class MainView {
  /**
   * @param {import('./state.js').ChatState} state
   * @param {object} handlers async callbacks: open, join, leave, send, create, remove, logout, loadOlder,
   *   deleteMessage, kick, toggleNotifications
   */
  constructor(state, handlers) {
    this.state = state;
    this.handlers = handlers;
    this.openName = null;
    this.root = byId('main-screen');
    this.panel = byId('chat-panel');
    this.list = byId('chat-list');
    this.messages = byId('messages');
    this.input = byId('message-input');
    this.bind();
  }

  open(me) {
    this.openName = null;
    this.setMe(me);
    this.setStatus('connecting');
    this.showPlaceholder('Loading chats…');
    this.list.replaceChildren();
    this.root.classList.add('show-list');
    this.root.classList.remove('show-chat');
    show(this.root);
  }

  close() {
    this.openName = null;
    show(this.root, false);
    this.list.replaceChildren();
    this.messages.replaceChildren();
    byId('member-list').replaceChildren();
    document.title = 'natter';
  }

  setMe(me) {
    byId('me-name').textContent = me.user;
    byId('me-badges').replaceChildren(...statusBadges(me));
    show(byId('create-chat-form'), !!me.admin);
    this.root.classList.toggle('is-admin', !!me.admin);
  }

  setStatus(status) {
    const text = { connecting: 'Connecting…', reconnecting: 'Reconnecting…', live: '' }[status] || '';
    const line = byId('conn-status');
    line.textContent = text;
    line.dataset.status = status;
  }

  // ----- chat list -----

  renderChatList() {
    const focused = document.activeElement && document.activeElement.dataset
      ? document.activeElement.dataset.chat
      : undefined;
    const chats = this.state.sorted();
    const items = chats.map((chat) => {
      const current = chat.name === this.openName;
      const button = el('button', {
        class: `chat-item${chat.joined ? ' joined' : ''}`,
        attrs: { type: 'button', 'aria-current': current ? 'true' : null },
      }, [
        el('span', { class: 'chat-dot', attrs: { 'aria-hidden': 'true' } }),
        el('span', { class: 'chat-name', text: chat.name }),
        chat.joined ? el('span', { class: 'visually-hidden', text: ' (joined)' }) : null,
        chat.unread > 0
          ? el('span', { class: 'unread' }, [
            el('span', { text: chat.unread > 99 ? '99+' : String(chat.unread) }),
            el('span', { class: 'visually-hidden', text: ' unread' }),
          ])
          : null,
      ]);
      button.dataset.chat = chat.name;
      button.addEventListener('click', () => this.handlers.open(chat.name));
      return el('li', {}, [button]);
    });
    this.list.replaceChildren(...items);
    show(byId('chat-list-empty'), chats.length === 0);
    if (focused !== undefined) {
      const again = [...this.list.querySelectorAll('button')].find((b) => b.dataset.chat === focused);
      if (again) again.focus();
    }
    const unread = this.state.totalUnread();
    document.title = unread > 0 ? `(${unread}) natter` : 'natter';
  }

  // ----- the open chat -----

  showPlaceholder(text) {
    byId('chat-placeholder-text').textContent = text;
    show(byId('chat-placeholder'));
    show(this.panel, false);
  }

  /** Shows a chat (full render). `focus` moves keyboard focus into it. */
  showChat(chat, focus = false) {
    const changed = this.openName !== chat.name;
    this.openName = chat.name;
    show(byId('chat-placeholder'), false);
    show(this.panel);
    this.root.classList.add('show-chat');
    this.root.classList.remove('show-list');
    if (changed) {
      this.resetRemoveConfirm();
      setError(byId('chat-error'), '');
      setError(byId('composer-error'), '');
      this.panel.classList.remove('members-open');
      byId('members-toggle').setAttribute('aria-expanded', 'false');
    }
    this.renderChat(chat, changed);
    if (focus) this.focusChat(chat);
  }

  focusChat(chat) {
    if (chat.joined && isWide()) this.input.focus();
    else if (!chat.joined) byId('join-button').focus();
    else byId('chat-title').focus();
  }

  /** The open chat was removed or is gone after a resync. */
  closeChat(text) {
    const hadFocus = this.panel.contains(document.activeElement);
    this.openName = null;
    this.messages.replaceChildren();
    this.showPlaceholder(text);
    this.root.classList.add('show-list');
    this.root.classList.remove('show-chat');
    // Focus was in the chat that just went away: keep it on the page, where the reason is written.
    if (hadFocus) {
      if (isWide()) byId('chat-placeholder-text').focus();
      else if (this.list.querySelector('button')) this.list.querySelector('button').focus();
    }
  }

  renderChat(chat, scrollToEnd = true) {
    byId('chat-title').textContent = chat.name;
    show(byId('join-button'), !chat.joined);
    show(byId('leave-button'), chat.joined);
    show(byId('not-joined'), !chat.joined);
    show(this.messages, chat.joined);
    this.input.disabled = !chat.joined;
    byId('send-button').disabled = !chat.joined;
    this.input.placeholder = chat.joined ? `Message ${chat.name}` : 'Join the chat to write';
    const isAdmin = !!(this.state.me && this.state.me.admin);
    if (!isAdmin) this.resetRemoveConfirm();
    show(byId('remove-chat-button'), isAdmin && byId('remove-confirm').hidden);
    this.renderTimeline(chat, scrollToEnd);
    this.renderMembers(chat);
  }

  renderTimeline(chat, scrollToEnd) {
    const wasNearBottom = this.isNearBottom();
    this.messages.setAttribute('aria-busy', 'true');
    const nodes = chat.items.map((item, index) => this.itemNode(item, chat.items[index - 1]));
    this.messages.replaceChildren(this.historyNode(chat), ...nodes);
    this.messages.removeAttribute('aria-busy');
    if (scrollToEnd || wasNearBottom) this.scrollToEnd();
    this.checkTop();
  }

  /** The first line of a timeline: older messages loading, or the beginning of the chat. */
  historyNode(chat) {
    let text = '';
    if (chat.loadingOlder) text = 'Loading older messages…';
    else if (chat.historyDone) text = 'Beginning of the chat';
    return el('li', { class: 'item history-status', text, attrs: { id: 'history-status' } });
  }

  /** Older messages of `chat` were added (or their loading started or ended): keeps what is on screen in place. */
  olderLoaded(chat) {
    if (chat.name !== this.openName) return;
    const m = this.messages;
    const fromBottom = m.scrollHeight - m.scrollTop;
    const nodes = chat.items.map((item, index) => this.itemNode(item, chat.items[index - 1]));
    m.replaceChildren(this.historyNode(chat), ...nodes);
    m.scrollTop = m.scrollHeight - fromBottom;
  }

  /** Asks for older messages when the top of the open chat's timeline is in view. */
  checkTop() {
    const chat = this.openName && this.state.get(this.openName);
    if (!chat || !chat.joined || chat.historyDone || chat.loadingOlder) return;
    if (this.messages.hidden || this.messages.scrollTop > NEAR_TOP_PX) return;
    this.handlers.loadOlder(chat.name).catch((err) => {
      if (this.openName === chat.name) setError(byId('chat-error'), err.message);
    });
  }

  /** A message of `chat` was deleted: it vanishes without moving the rest. */
  messageRemoved(chat, id) {
    if (chat.name !== this.openName) return;
    const node = [...this.messages.children].find((li) => li.dataset.id === String(id));
    if (!node) return;
    const nearBottom = this.isNearBottom();
    this.renderTimeline(chat, false);
    if (nearBottom) this.scrollToEnd();
  }

  /** A timeline item was inserted at `index` of `chat`. */
  itemAdded(chat, index) {
    if (chat.name !== this.openName) return;
    const item = chat.items[index];
    // The first child is the history line, then one node per item.
    if (index !== chat.items.length - 1 || this.messages.children.length !== chat.items.length) {
      this.renderTimeline(chat, false);
      return;
    }
    const nearBottom = this.isNearBottom();
    this.messages.append(this.itemNode(item, chat.items[index - 1]));
    const mine = item.kind === 'message' && this.state.isMe(item.message.user);
    if (nearBottom || mine) this.scrollToEnd();
  }

  itemNode(item, previous) {
    if (item.kind === 'system') {
      return el('li', { class: 'item system' }, [
        el('span', { class: 'system-text', text: item.text }),
        timeElement(item.time),
      ]);
    }
    const message = item.message;
    const classes = ['item', 'message'];
    if (this.state.isMe(message.user)) classes.push('mine');
    if (message.bot) classes.push('from-bot');
    if (continues(previous, item)) classes.push('continued');
    const node = el('li', { class: classes.join(' ') }, [
      el('div', { class: 'message-meta' }, [
        el('span', { class: `author ${nameColor(message.user)}`, text: message.user }),
        ...statusBadges(message),
        timeElement(message.time),
      ]),
      el('p', { class: 'message-text' }, linkified(message.text)),
      this.canDelete(message) ? this.deleteControl(message) : null,
    ]);
    node.dataset.id = String(message.id);
    return node;
  }

  /** Your own messages, and every message for a verified admin (the server decides in the end). */
  canDelete(message) {
    const me = this.state.me;
    if (!me) return false;
    return (me.admin && me.verified) || (!message.bot && this.state.isMe(message.user));
  }

  deleteControl(message) {
    const chatName = message.chat;
    const wrap = el('span', { class: 'message-actions' });
    const ask = el('button', {
      class: 'link-button delete-button',
      text: 'Delete',
      attrs: { type: 'button', 'aria-label': `Delete message from ${message.user}` },
    });
    return confirmingButton(wrap, ask, {
      verb: 'Delete',
      boxClass: 'delete-confirm',
      label: 'Confirm delete',
      question: 'Delete this message?',
      action: () => this.handlers.deleteMessage(chatName, message.id),
      onError: (err) => {
        if (this.openName === chatName) setError(byId('chat-error'), err.message);
      },
    });
  }

  isNearBottom() {
    const m = this.messages;
    return m.scrollHeight - m.scrollTop - m.clientHeight < NEAR_BOTTOM_PX;
  }

  scrollToEnd() {
    this.messages.scrollTop = this.messages.scrollHeight;
  }

  renderMembers(chat) {
    if (chat.name !== this.openName) return;
    const members = chat.joined ? chat.members() : [];
    const me = this.state.me;
    const canKick = !!(me && me.admin && me.verified);
    const items = members.map((member) => el('li', { class: 'member' }, [
      el('span', { class: `member-dot ${nameColor(member.user)}`, attrs: { 'aria-hidden': 'true' } }),
      el('span', { class: 'member-name', text: member.user }),
      this.state.isMe(member.user) ? el('span', { class: 'muted you', text: '(you)' }) : null,
      ...statusBadges(member),
      // Signing in needs a verified account: an online member who is neither verified nor the bot is a guest.
      canKick && !member.verified && !member.bot && !this.state.isMe(member.user) ? this.kickControl(member.user) : null,
    ]));
    byId('member-list').replaceChildren(...items);
    show(byId('members-empty'), !chat.joined);
    byId('members-title').textContent = chat.joined ? `Members (${members.length})` : 'Members';
    byId('members-count').textContent = chat.joined ? String(members.length) : '';
  }

  kickControl(user) {
    const wrap = el('span', { class: 'member-actions' });
    const ask = el('button', {
      class: 'link-button kick-button', text: 'Kick', attrs: { type: 'button', 'aria-label': `Kick ${user}` },
    });
    return confirmingButton(wrap, ask, {
      verb: 'Kick',
      boxClass: 'kick-confirm',
      label: `Confirm kick of ${user}`,
      question: `Kick ${user} and block the name?`,
      action: () => this.handlers.kick(user),
      onError: (err) => setError(byId('chat-error'), err.message),
    });
  }

  /** The bell: on when notifications are wanted and allowed. */
  setNotifications(state) {
    const button = byId('notify-button');
    show(button, state !== 'unsupported');
    button.setAttribute('aria-pressed', String(state === 'on'));
    button.title = {
      on: 'Notifications are on: click to turn them off',
      off: 'Get a notification for new messages while this tab is in the background',
      blocked: 'Notifications are blocked in the browser settings',
    }[state] || '';
  }

  resetRemoveConfirm() {
    show(byId('remove-confirm'), false);
    show(byId('remove-chat-button'), !!(this.state.me && this.state.me.admin));
  }

  // ----- controls -----

  bind() {
    byId('logout-button').addEventListener('click', () => this.handlers.logout());
    byId('notify-button').addEventListener('click', () => this.handlers.toggleNotifications());
    this.messages.addEventListener('scroll', () => this.checkTop(), { passive: true });

    byId('back-to-chats').addEventListener('click', () => {
      this.root.classList.add('show-list');
      this.root.classList.remove('show-chat');
      const current = this.list.querySelector('[aria-current="true"]') || this.list.querySelector('button');
      if (current) current.focus();
    });

    byId('members-toggle').addEventListener('click', () => {
      const open = this.panel.classList.toggle('members-open');
      byId('members-toggle').setAttribute('aria-expanded', String(open));
    });

    byId('join-button').addEventListener('click', () => this.runChatAction('join'));
    byId('leave-button').addEventListener('click', () => this.runChatAction('leave'));

    byId('remove-chat-button').addEventListener('click', () => {
      if (!this.openName) return;
      byId('remove-confirm-text').textContent = `Remove “${this.openName}” for everyone?`;
      show(byId('remove-chat-button'), false);
      show(byId('remove-confirm'));
      byId('remove-confirm-no').focus();
    });
    byId('remove-confirm-no').addEventListener('click', () => {
      this.resetRemoveConfirm();
      byId('remove-chat-button').focus();
    });
    byId('remove-confirm-yes').addEventListener('click', () => this.runChatAction('remove'));

    const composer = byId('composer');
    composer.addEventListener('submit', (event) => {
      event.preventDefault();
      this.send();
    });
    this.input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.send();
      }
    });
    this.input.addEventListener('input', () => {
      this.fitInput();
      if (this.input.value) setError(byId('composer-error'), '');
    });

    const createForm = byId('create-chat-form');
    createForm.addEventListener('submit', async (event) => {
      event.preventDefault();
      const field = byId('new-chat-name');
      const error = byId('create-chat-error');
      const name = field.value.trim();
      setError(error, '');
      if (!name) {
        setError(error, 'Please enter a chat name.');
        field.focus();
        return;
      }
      try {
        await this.handlers.create(name);
        field.value = '';
      } catch (err) {
        setError(error, err.message);
        field.focus();
      }
    });
  }

  fitInput() {
    this.input.style.height = 'auto';
    this.input.style.height = `${Math.min(this.input.scrollHeight, 160)}px`;
  }

  async runChatAction(action) {
    const name = this.openName;
    if (!name) return;
    const error = byId('chat-error');
    setError(error, '');
    const buttons = ['join-button', 'leave-button', 'remove-confirm-yes'].map(byId);
    for (const button of buttons) button.disabled = true;
    try {
      await this.handlers[action](name);
    } catch (err) {
      if (this.openName === name) setError(error, err.message);
    } finally {
      for (const button of buttons) button.disabled = false;
    }
    const chat = this.state.get(name);
    if (chat && this.openName === name) {
      if (action === 'join' && chat.joined) this.input.focus();
      else if (action === 'leave' && !chat.joined) byId('join-button').focus();
    } else if (action === 'remove') {
      const first = this.list.querySelector('button');
      if (first) first.focus();
    }
  }

  async send() {
    const name = this.openName;
    const text = this.input.value;
    const error = byId('composer-error');
    if (!name || this.input.disabled || this.sending) return;
    if (!text.trim()) {
      setError(error, 'Write something first.');
      return;
    }
    setError(error, '');
    this.sending = true;
    try {
      await this.handlers.send(name, text);
      // Only clear what was sent: the person may have kept typing while the request was on its way.
      if (this.input.value === text) this.input.value = '';
      this.fitInput();
    } catch (err) {
      if (this.openName === name) setError(error, err.message);
    } finally {
      this.sending = false;
    }
    if (this.openName === name) this.input.focus();
  }
}

/** `ask` in `wrap`, asking inline before it acts: a question with the action and Cancel. */
function confirmingButton(wrap, ask, { verb, boxClass, label, question, action, onError }) {
  ask.addEventListener('click', () => {
    const yes = el('button', { class: 'danger small', text: verb, attrs: { type: 'button' } });
    const no = el('button', { class: 'secondary small', text: 'Cancel', attrs: { type: 'button' } });
    no.addEventListener('click', () => {
      wrap.replaceChildren(ask);
      ask.focus();
    });
    yes.addEventListener('click', async () => {
      yes.disabled = true;
      no.disabled = true;
      setError(byId('chat-error'), '');
      try {
        await action();
      } catch (err) {
        onError(err);
        wrap.replaceChildren(ask);
      }
    });
    wrap.replaceChildren(el('span', { class: boxClass, attrs: { role: 'group', 'aria-label': label } }, [
      el('span', { text: question }), yes, no,
    ]));
    no.focus();
  });
  wrap.append(ask);
  return wrap;
}
