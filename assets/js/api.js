// The natter JSON API: same-origin requests carrying the session cookie, errors as {"error": "..."}.

/** The server answered with an error status; `message` is the server's own text. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
  }
}

/** The request never got an answer (server down, network gone, connection reset). */
export class NetworkError extends Error {
  constructor() {
    super('cannot reach the server, check your connection and try again');
    this.name = 'NetworkError';
  }
}

/** The event types the web client acts on (app.js, handleEvent); the server never queues the others. */
export const HANDLED_EVENT_TYPES = [
  'MessageEvent',
  'MessageDeletedEvent',
  'ChatJoinEvent',
  'ChatLeaveEvent',
  'SystemMessageChatJoinEvent',
  'SystemMessageChatLeaveEvent',
  'ChatCreatedEvent',
  'ChatRemovedEvent',
  'ResyncEvent',
];

let unauthorizedHandler = null;

/**
 * Registers the function asked to restore the session when a signed-in request gets 401.
 * It resolves to true when the session works again (the request is then retried once).
 */
export function setUnauthorizedHandler(handler) {
  unauthorizedHandler = handler;
}

async function request(method, path, body, signal) {
  const init = {
    method,
    credentials: 'same-origin',
    cache: 'no-store',
    headers: { Accept: 'application/json' },
    signal,
  };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  let text;
  try {
    response = await fetch(path, init);
    text = await response.text();
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new NetworkError();
  }
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const message = data && typeof data.error === 'string' && data.error
      ? data.error
      : `the server answered ${response.status}`;
    throw new ApiError(response.status, message);
  }
  return data;
}

const isUnauthorized = (err) => err instanceof ApiError && err.status === 401;

// A 401 on a signed-in route can be a race with another tab of this browser that just renewed the shared
// session cookie, so the request is tried once more before the session is given up on.
async function authed(method, path, body, signal) {
  try {
    return await request(method, path, body, signal);
  } catch (err) {
    if (!isUnauthorized(err)) throw err;
  }
  try {
    return await request(method, path, body, signal);
  } catch (err) {
    if (!isUnauthorized(err) || !unauthorizedHandler) throw err;
    if (!(await unauthorizedHandler())) throw err;
  }
  return request(method, path, body, signal);
}

export const api = {
  guestLogin: (user) => request('POST', '/api/login', { user }),
  authorize: (user, password) => request('POST', '/api/authorize', { user, password }),
  register: (user, email, password) => request('POST', '/api/register', { user, email, password }),
  requestResetPassword: (user) => request('POST', '/api/requestResetPassword', { user }),
  resetPassword: (user, passwordResetToken, password) =>
    request('POST', '/api/resetPassword', { user, passwordResetToken, password }),

  /** Brings back the session of the cookie, if any: the user, or null when signed out (never an error status). */
  probeSession: () => request('POST', '/api/session', {}),
  logout: () => request('POST', '/api/loggedonly/logout', {}),
  keepalive: () => authed('PUT', '/api/loggedonly/keepalive', {}),

  /** Opens this tab's event queue, taking only the event types the client handles (never presence). */
  openQueue: () => authed('POST', '/api/loggedonly/queues', { event_types: HANDLED_EVENT_TYPES }),
  events: (queueId, lastEventId, signal) => {
    const query = new URLSearchParams({ queue_id: String(queueId), last_event_id: String(lastEventId) });
    return authed('GET', `/api/loggedonly/events?${query}`, undefined, signal);
  },

  getChats: () => authed('GET', '/api/loggedonly/getChats'),
  joinChat: (chat) => authed('POST', '/api/loggedonly/joinChat', { chat }),
  leaveChat: (chat) => authed('POST', '/api/loggedonly/leaveChat', { chat }),
  postMessage: (chat, text) => authed('POST', '/api/loggedonly/postMessage', { chat, text }),
  /** Up to `limit` messages older than `before` (or the newest when it is null), oldest first. */
  getMessages: (chat, before, limit) => {
    const body = { chat, limit };
    if (before !== null && before !== undefined) body.before = before;
    return authed('POST', '/api/loggedonly/getMessages', body);
  },
  deleteMessage: (chat, id) => authed('POST', '/api/loggedonly/deleteMessage', { chat, id }),

  createChat: (chat) => authed('POST', '/api/adminonly/createChat', { chat }),
  removeChat: (chat) => authed('POST', '/api/adminonly/removeChat', { chat }),
  kick: (user) => authed('POST', '/api/adminonly/kick', { user }),
};
