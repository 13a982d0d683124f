// natter web client: restores the session, then wires the sign-in screen, the main screen and live events.
//
// Modules (plain ES modules, no build step):
//   js/api.js        fetch wrappers for the JSON API, ApiError / NetworkError, 401 recovery hook
//   js/events.js     EventStream: one queue per tab, long polls with acknowledgement, backoff, keepalive
//   js/state.js      ChatState: chats, timelines (deduplicated by message id), members, unread counts
//   js/auth-view.js  the sign-in screen: guest, sign in, register, password reset
//   js/chat-view.js  the main screen: chat list, timeline, members, composer, admin controls
//   js/dom.js        small DOM functions; text always goes in through textContent

import { api, ApiError, NetworkError, setUnauthorizedHandler } from './js/api.js';
import { AuthView } from './js/auth-view.js';
import { MainView } from './js/chat-view.js';
import { byId, isWide, show } from './js/dom.js';
import { EventStream, retryDelay } from './js/events.js';
import { ChatState } from './js/state.js';

const OPEN_CHAT_KEY = 'natter.openChat';
const NOTIFY_KEY = 'natter.notifications';
// Messages per getMessages page when scrolling back.
const HISTORY_PAGE = 50;

const state = new ChatState();
// Bumped on every sign-in and sign-out, so answers that arrive for an earlier session are dropped.
let generation = 0;
let firstSync = true;
// Chats this tab is joining right now: their events may arrive before the joinChat answer. System lines
// that arrive then are held back, so they land after the history the answer brings.
const joining = new Set();
const heldLines = new Map();

const auth = new AuthView({ onSignedIn: enterMain });
const view = new MainView(state, {
  open: openChat,
  join: joinChat,
  leave: leaveChat,
  send: sendMessage,
  create: createChat,
  remove: removeChat,
  logout,
  loadOlder,
  deleteMessage,
  kick,
  toggleNotifications,
});
const stream = new EventStream({
  onEvents: handleEvents,
  onResync: resync,
  onStatus: (status) => view.setStatus(status),
});

setUnauthorizedHandler(recoverSession);

function savedOpenChat() {
  try {
    return sessionStorage.getItem(OPEN_CHAT_KEY);
  } catch {
    return null;
  }
}

function saveOpenChat(name) {
  try {
    if (name) sessionStorage.setItem(OPEN_CHAT_KEY, name);
    else sessionStorage.removeItem(OPEN_CHAT_KEY);
  } catch {
    // Per-tab storage is a convenience only.
  }
}

// ----- session -----

function enterMain(me) {
  generation += 1;
  firstSync = true;
  joining.clear();
  heldLines.clear();
  state.reset();
  state.me = me;
  show(byId('loading-screen'), false);
  auth.close();
  view.open(me);
  view.setNotifications(notificationState());
  stream.start();
}

function signedOut(notice) {
  generation += 1;
  stream.stop();
  state.reset();
  joining.clear();
  heldLines.clear();
  view.close();
  show(byId('loading-screen'), false);
  auth.open(notice);
}

async function logout() {
  stream.stop();
  try {
    await api.logout();
  } catch {
    // Signed out here either way; the server ends an abandoned session on its own.
  }
  saveOpenChat(null);
  signedOut('You have signed out.');
}

let recovery = null;

/** Called on a 401 from a signed-in request: revives the session if the cookie still can. */
function recoverSession() {
  if (!recovery) {
    recovery = (async () => {
      const current = generation;
      try {
        const me = await api.probeSession();
        if (current !== generation || !state.me) return false;
        if (!me) {
          signedOut('Your session has ended. Please sign in again.');
          return false;
        }
        state.me = me;
        view.setMe(me);
        // Memberships end while a session is offline; reload them.
        stream.requestResync();
        return true;
      } catch {
        // Unreachable or failing server: the request that asked gives up; the stream retries on its own.
        return false;
      } finally {
        recovery = null;
      }
    })();
  }
  return recovery;
}

// ----- state from the server -----

async function resync() {
  const current = generation;
  const reports = await api.getChats();
  if (current !== generation) return;
  state.applyReports(Array.isArray(reports) ? reports : []);
  view.renderChatList();
  if (firstSync) {
    firstSync = false;
    const initial = pickInitialChat();
    // Right after signing in, focus is nowhere (the form is gone): put it in the chat for keyboard users.
    const active = document.activeElement;
    const focusIsLost = !active || active === document.body || !!active.closest('[hidden]');
    if (initial) openChat(initial, focusIsLost);
    else if (state.chats.size === 0) view.showPlaceholder('There are no chats yet.');
    else view.showPlaceholder('Pick a chat to start.');
    return;
  }
  const open = view.openName && state.get(view.openName);
  if (open) view.showChat(open);
  else if (view.openName) closeOpenChat(`“${view.openName}” no longer exists.`);
}

function pickInitialChat() {
  const saved = savedOpenChat();
  if (saved && state.get(saved)) return saved;
  // On a phone the list comes first; the person picks the chat.
  if (!isWide()) return null;
  const chats = state.sorted();
  const joined = chats.find((chat) => chat.joined);
  if (joined) return joined.name;
  const main = chats.find((chat) => chat.name.toLowerCase() === 'main');
  return (main || chats[0] || {}).name || null;
}

function closeOpenChat(text) {
  saveOpenChat(null);
  view.closeChat(text);
  view.renderChatList();
}

function handleEvents(events) {
  for (const envelope of events) {
    try {
      handleEvent(envelope.type, envelope.event || {});
    } catch (err) {
      console.error('natter: cannot handle event', envelope.type, err);
    }
  }
}

function handleEvent(type, event) {
  const chat = event.chat ? state.get(event.chat) : null;
  const following = chat && (chat.joined || joining.has(chat.name));
  switch (type) {
    case 'MessageEvent': {
      if (!following) return;
      const index = chat.addMessage(event);
      if (index < 0) return;
      const open = chat.name === view.openName;
      if (open) view.itemAdded(chat, index);
      // Unread: chats not on screen, and the open one while the tab is in the background.
      if ((!open || document.hidden) && !state.isMe(event.user)) {
        chat.unread += 1;
        view.renderChatList();
      }
      if (document.hidden && !state.isMe(event.user)) notify(chat, event);
      return;
    }
    case 'MessageDeletedEvent': {
      if (!chat || !chat.removeMessage(event.id)) return;
      view.messageRemoved(chat, event.id);
      return;
    }
    case 'ChatJoinEvent': {
      if (!chat) return;
      if (state.isMe(event.user) && !chat.joined && !joining.has(chat.name)) {
        // Another tab of ours joined: load the chat with its history.
        stream.requestResync();
        return;
      }
      state.userJoined(chat, event);
      view.renderMembers(chat);
      return;
    }
    case 'ChatLeaveEvent': {
      if (!chat) return;
      if (state.isMe(event.user)) {
        // We left in another tab (or were made to leave).
        chat.forget();
        refreshChat(chat.name);
        return;
      }
      state.userLeft(chat, event);
      view.renderMembers(chat);
      return;
    }
    case 'SystemMessageChatJoinEvent':
    case 'SystemMessageChatLeaveEvent': {
      if (!following) return;
      const who = state.isMe(event.user) ? 'You' : event.user;
      const text = type === 'SystemMessageChatJoinEvent' ? `${who} joined` : `${who} left`;
      if (!chat.joined) {
        if (!heldLines.has(chat.name)) heldLines.set(chat.name, []);
        heldLines.get(chat.name).push({ text, time: event.time });
        return;
      }
      view.itemAdded(chat, state.addSystemLine(chat, text, event.time));
      return;
    }
    case 'ChatCreatedEvent': {
      if (!event.chat || chat) return;
      state.ensure(event.chat);
      view.renderChatList();
      if (!view.openName && state.chats.size === 1 && isWide()) openChat(event.chat, false);
      return;
    }
    case 'ChatRemovedEvent': {
      if (!chat) return;
      state.chats.delete(chat.name);
      if (view.openName === chat.name) closeOpenChat(`“${chat.name}” was removed.`);
      else view.renderChatList();
      return;
    }
    case 'ResyncEvent':
      stream.requestResync();
      return;
    default:
      // Not asked for (api.js, HANDLED_EVENT_TYPES): presence in chats arrives as join and leave events.
      return;
  }
}

// ----- actions from the main screen -----

function openChat(name, focus = true) {
  const chat = state.get(name);
  if (!chat) return;
  chat.unread = 0;
  saveOpenChat(name);
  view.showChat(chat, focus);
  view.renderChatList();
}

async function joinChat(name) {
  const current = generation;
  joining.add(name);
  heldLines.delete(name);
  try {
    const report = await api.joinChat(name);
    if (current !== generation) return;
    const chat = state.applyReport(report);
    for (const line of heldLines.get(name) || []) state.addSystemLine(chat, line.text, line.time);
  } catch (err) {
    if (err instanceof ApiError && err.message === 'user is already logged in chat') {
      stream.requestResync();
      return;
    }
    throw err;
  } finally {
    joining.delete(name);
    heldLines.delete(name);
  }
  refreshChat(name);
}

async function leaveChat(name) {
  const current = generation;
  try {
    await api.leaveChat(name);
  } catch (err) {
    if (!(err instanceof ApiError && err.message === 'user not logged in such chat')) throw err;
  }
  if (current !== generation) return;
  const chat = state.get(name);
  if (chat) chat.forget();
  refreshChat(name);
}

async function sendMessage(name, text) {
  let message;
  try {
    message = await api.postMessage(name, text);
  } catch (err) {
    if (err instanceof ApiError && err.message === 'user not logged in such chat') stream.requestResync();
    if (err instanceof NetworkError) throw new Error('Not sent: cannot reach the server. Try again in a moment.');
    throw err;
  }
  const chat = state.get(name);
  if (!chat || !message || typeof message.id !== 'number') return;
  const index = chat.addMessage(message);
  if (index >= 0) view.itemAdded(chat, index);
}

async function createChat(name) {
  await api.createChat(name);
  state.ensure(name);
  openChat(name, false);
}

async function removeChat(name) {
  await api.removeChat(name);
  if (!state.get(name)) return;
  state.chats.delete(name);
  if (view.openName === name) closeOpenChat(`“${name}” was removed.`);
  else view.renderChatList();
}

async function loadOlder(name) {
  const chat = state.get(name);
  if (!chat || !chat.joined || chat.historyDone || chat.loadingOlder) return;
  const current = generation;
  chat.loadingOlder = true;
  view.olderLoaded(chat);
  try {
    const page = await api.getMessages(name, chat.oldestMessageId(), HISTORY_PAGE);
    if (current !== generation || state.get(name) !== chat || !chat.joined) return;
    const messages = Array.isArray(page) ? page : [];
    if (messages.length < HISTORY_PAGE) chat.historyDone = true;
    for (const message of messages) chat.addMessage(message);
  } finally {
    chat.loadingOlder = false;
    view.olderLoaded(chat);
  }
}

async function deleteMessage(name, id) {
  await api.deleteMessage(name, id);
  // The event reaches every tab, this one too; removing now makes it vanish at once.
  const chat = state.get(name);
  if (chat && chat.removeMessage(id)) view.messageRemoved(chat, id);
}

async function kick(user) {
  await api.kick(user);
}

// ----- notifications (asked for only after a click on the bell) -----

function notificationsWanted() {
  try {
    return localStorage.getItem(NOTIFY_KEY) === 'on';
  } catch {
    return false;
  }
}

function notificationState() {
  if (!('Notification' in window)) return 'unsupported';
  if (Notification.permission === 'denied') return 'blocked';
  return Notification.permission === 'granted' && notificationsWanted() ? 'on' : 'off';
}

async function toggleNotifications() {
  if (!('Notification' in window)) return;
  let wanted = !(notificationState() === 'on');
  if (wanted && Notification.permission === 'default') {
    const answer = await Notification.requestPermission();
    wanted = answer === 'granted';
  }
  try {
    localStorage.setItem(NOTIFY_KEY, wanted ? 'on' : 'off');
  } catch {
    // Without storage the choice lasts as long as the page.
  }
  view.setNotifications(notificationState());
}

function notify(chat, message) {
  if (notificationState() !== 'on') return;
  try {
    const text = message.text.length > 200 ? `${message.text.slice(0, 200)}…` : message.text;
    const notification = new Notification(`${message.user} in ${chat.name}`, { body: text, tag: `natter:${chat.name}` });
    notification.onclick = () => {
      window.focus();
      openChat(chat.name);
      notification.close();
    };
  } catch {
    // Some browsers only show notifications through a service worker; the unread count in the title remains.
  }
}

function refreshChat(name) {
  const chat = state.get(name);
  if (chat && view.openName === name) view.showChat(chat);
  view.renderChatList();
}

// Back in the foreground: what arrived in the open chat meanwhile is read now.
document.addEventListener('visibilitychange', () => {
  if (document.hidden || !view.openName) return;
  const chat = state.get(view.openName);
  if (chat && chat.unread > 0) {
    chat.unread = 0;
    view.renderChatList();
  }
});

// ----- start -----

async function boot() {
  let failures = 0;
  for (;;) {
    try {
      // Asked without an error status, so a signed-out page load leaves no 401 in the console.
      const me = await api.probeSession();
      if (me) {
        enterMain(me);
      } else {
        show(byId('loading-screen'), false);
        auth.open();
      }
      return;
    } catch (err) {
      failures += 1;
      byId('loading-screen').querySelector('p').textContent = 'Cannot reach the server. Trying again…';
      await new Promise((resolve) => setTimeout(resolve, retryDelay(failures)));
    }
  }
}

boot();
