// Live updates: one event queue per tab, read by long polls that acknowledge what was handled.

import { api, ApiError } from './api.js';

const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 10_000;
const KEEPALIVE_MS = 15_000;
// A poll is held by the server for poll_timeout (29 s by default); one that hangs far longer than that sits on a
// dead connection and is replaced.
const POLL_WATCHDOG_MS = 100_000;
// An empty answer that comes back at once (a server shutting down) is not retried in a tight loop.
const FAST_EMPTY_MS = 1_000;
const FAST_EMPTY_PAUSE_MS = 300;

/** Delay before retry number `failures` (1, 2, ...): 0.5 s doubling up to 10 s, with ±25 % jitter. */
export function retryDelay(failures) {
  const base = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** Math.max(0, failures - 1));
  return Math.round(base * (0.75 + Math.random() * 0.5));
}

const isBadQueue = (err) => err instanceof ApiError && err.status === 400;

export class EventStream {
  /**
   * @param {object} handlers
   * @param {(events: Array<{id:number,type:string,event:object}>) => void} handlers.onEvents
   * @param {() => Promise<void>} handlers.onResync refetches the whole state (getChats)
   * @param {(status: 'connecting'|'live'|'reconnecting') => void} handlers.onStatus
   */
  constructor({ onEvents, onResync, onStatus }) {
    this.onEvents = onEvents;
    this.onResync = onResync;
    this.onStatus = onStatus;
    this.running = false;
    this.run = 0;
    this.status = null;
    this.queueId = null;
    this.lastEventId = 0;
    this.needsResync = true;
    this.pollController = null;
    this.wakeSleep = null;
    this.keepaliveTimer = null;
    this.onOnline = () => this.wake();
  }

  /** Opens a queue, loads the state and keeps reading events until stop(). */
  start() {
    if (this.running) return;
    this.running = true;
    // A loop of an earlier start() may still be waiting on a request: the run number tells it to end.
    this.run += 1;
    this.queueId = null;
    this.needsResync = true;
    this.status = null;
    this.setStatus('connecting');
    this.keepaliveTimer = setInterval(() => {
      api.keepalive().catch(() => {
        // Polls keep the session alive as well; a failed keepalive says nothing new.
      });
    }, KEEPALIVE_MS);
    window.addEventListener('online', this.onOnline);
    this.loop(this.run);
  }

  stop() {
    this.running = false;
    clearInterval(this.keepaliveTimer);
    this.keepaliveTimer = null;
    window.removeEventListener('online', this.onOnline);
    this.abortPoll();
    this.wake();
  }

  /** Refetches the state before the next poll (after this tab learns it missed something). */
  requestResync() {
    this.needsResync = true;
    // Events of an interrupted poll are not acknowledged, so the server sends them again.
    this.abortPoll();
    this.wake();
  }

  abortPoll() {
    if (this.pollController) this.pollController.abort();
  }

  wake() {
    if (this.wakeSleep) this.wakeSleep();
  }

  sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wakeSleep = () => {
        this.wakeSleep = null;
        done();
      };
    });
  }

  setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    this.onStatus(status);
  }

  async loop(run) {
    const alive = () => this.running && this.run === run;
    let failures = 0;
    const connected = () => {
      failures = 0;
      this.setStatus('live');
    };
    while (alive()) {
      try {
        if (this.queueId === null) {
          const queue = await api.openQueue();
          if (!alive()) break;
          this.queueId = queue.queue_id;
          this.lastEventId = queue.last_event_id;
          // The queue exists before the state is read, so nothing can fall between the two.
          this.needsResync = true;
        }
        while (this.needsResync && alive()) {
          this.needsResync = false;
          try {
            await this.onResync();
          } catch (err) {
            this.needsResync = true;
            throw err;
          }
          connected();
        }
        if (!alive()) break;
        if (failures > 0) {
          // A poll can be held for poll_timeout: ask something quick first to tell the person we are back.
          await api.keepalive();
          connected();
        }
        await this.pollOnce(connected, alive);
      } catch (err) {
        if (!alive()) break;
        if (err && err.name === 'AbortError') continue;
        if (isBadQueue(err)) {
          // Unknown, expired or overflowed queue: open a new one and reload the state.
          this.queueId = null;
          continue;
        }
        failures += 1;
        this.setStatus('reconnecting');
        await this.sleep(retryDelay(failures));
      }
    }
  }

  /** One long poll; `connected` is called once the server has answered it. */
  async pollOnce(connected, alive) {
    const controller = new AbortController();
    this.pollController = controller;
    const watchdog = setTimeout(() => controller.abort(), POLL_WATCHDOG_MS);
    const started = Date.now();
    let reply;
    try {
      reply = await api.events(this.queueId, this.lastEventId, controller.signal);
    } finally {
      clearTimeout(watchdog);
      if (this.pollController === controller) this.pollController = null;
    }
    if (!alive()) return;
    connected();
    const events = reply && Array.isArray(reply.events) ? reply.events : [];
    if (events.length > 0) {
      this.onEvents(events);
      // Acknowledged by the next poll.
      this.lastEventId = events[events.length - 1].id;
    } else if (Date.now() - started < FAST_EMPTY_MS) {
      await this.sleep(FAST_EMPTY_PAUSE_MS);
    }
  }
}
