// What this tab knows: the signed-in user and every chat with its timeline, members and unread count.

const byName = (a, b) => a.localeCompare(b, undefined, { sensitivity: 'base' }) || (a < b ? -1 : a > b ? 1 : 0);

// Timeline order: a message sorts by its id; a system line ("alice joined") sorts after the last message that
// was known when it arrived, then by arrival. So history fetched later slots in around the system lines.
const compareKeys = (a, b) => a.key[0] - b.key[0] || a.key[1] - b.key[1];

const userKey = (name) => name.toLowerCase();

function statusOf(user) {
  return { user: user.user, verified: !!user.verified, admin: !!user.admin, bot: !!user.bot };
}

export class Chat {
  constructor(name) {
    this.name = name;
    this.joined = false;
    /** @type {Array<{kind:'message', key:number[], message:object} | {kind:'system', key:number[], text:string, time:number}>} */
    this.items = [];
    this.messageIds = new Set();
    this.lastMessageId = 0;
    /** @type {Map<string, {user:string, verified:boolean, admin:boolean, bot:boolean}>} */
    this.users = new Map();
    this.unread = 0;
    /** True once getMessages found nothing older: the timeline starts at the beginning of the chat. */
    this.historyDone = false;
    this.loadingOlder = false;
    /** Ids deleted while this tab watched: a late copy of one is not shown again. */
    this.deleted = new Set();
  }

  /** Members sorted by name. */
  members() {
    return [...this.users.values()].sort((a, b) => byName(a.user, b.user));
  }

  forget() {
    this.joined = false;
    this.items = [];
    this.messageIds.clear();
    this.lastMessageId = 0;
    this.users.clear();
    this.unread = 0;
    this.historyDone = false;
  }

  /** The id of the oldest message in the timeline, or null. */
  oldestMessageId() {
    const first = this.items.find((item) => item.kind === 'message');
    return first ? first.message.id : null;
  }

  /** Drops a deleted message; true if it was in the timeline. */
  removeMessage(id) {
    this.deleted.add(id);
    if (!this.messageIds.has(id)) return false;
    this.messageIds.delete(id);
    this.items = this.items.filter((item) => item.kind !== 'message' || item.message.id !== id);
    return true;
  }

  /** Inserts a timeline item in order; returns its index. */
  insert(item) {
    let index = this.items.length;
    while (index > 0 && compareKeys(this.items[index - 1], item) > 0) index -= 1;
    this.items.splice(index, 0, item);
    return index;
  }

  /** Adds a message unless it is already there; returns its index, or -1 for a duplicate. */
  addMessage(message) {
    if (this.messageIds.has(message.id) || this.deleted.has(message.id)) return -1;
    this.messageIds.add(message.id);
    this.lastMessageId = Math.max(this.lastMessageId, message.id);
    return this.insert({ kind: 'message', key: [message.id, 0], message });
  }
}

export class ChatState {
  constructor() {
    this.me = null;
    /** @type {Map<string, Chat>} */
    this.chats = new Map();
    this.systemSeq = 0;
  }

  reset() {
    this.me = null;
    this.chats.clear();
  }

  isMe(name) {
    return !!this.me && userKey(name) === userKey(this.me.user);
  }

  get(name) {
    return this.chats.get(name) || null;
  }

  ensure(name) {
    let chat = this.chats.get(name);
    if (!chat) {
      chat = new Chat(name);
      this.chats.set(name, chat);
    }
    return chat;
  }

  /** Chats in display order. */
  sorted() {
    return [...this.chats.values()].sort((a, b) => byName(a.name, b.name));
  }

  totalUnread() {
    let total = 0;
    for (const chat of this.chats.values()) total += chat.unread;
    return total;
  }

  /** Replaces the chat list with a getChats answer; timelines of joined chats are merged, not replaced. */
  applyReports(reports) {
    const seen = new Set();
    for (const report of reports) {
      seen.add(report.chat);
      this.applyReport(report);
    }
    for (const name of [...this.chats.keys()]) {
      if (!seen.has(name)) this.chats.delete(name);
    }
  }

  /** Applies one ChatReport (from getChats or joinChat). */
  applyReport(report) {
    const chat = this.ensure(report.chat);
    if (!report.joined) {
      chat.forget();
      return chat;
    }
    chat.joined = true;
    for (const message of report.messages || []) chat.addMessage(message);
    chat.users = new Map((report.users || []).map((u) => [userKey(u.user), statusOf(u)]));
    return chat;
  }

  addSystemLine(chat, text, time) {
    this.systemSeq += 1;
    return chat.insert({ kind: 'system', key: [chat.lastMessageId, this.systemSeq], text, time });
  }

  userJoined(chat, event) {
    chat.users.set(userKey(event.user), statusOf(event));
  }

  userLeft(chat, event) {
    chat.users.delete(userKey(event.user));
  }
}
