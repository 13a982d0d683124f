// The web client through nginx in front of three natter nodes (round robin, nothing sticky): two people talk
// both ways and see the same messages in the same order, a reload keeps the session, and a node killed with
// SIGKILL mid-conversation changes nothing for the pages.
//
// Not a suite of its own (`node --test tests/browser/` does not pick it up): tests/cluster/web_client.rs starts
// the PostgreSQL, the nodes and nginx, runs this script with NATTER_URL set to nginx, and answers its
// "kill N" lines on stdin once node N is dead.

import assert from 'node:assert/strict';
import { createInterface } from 'node:readline';
import {
  assertClean, guestLogin, joinOpenChat, launchBrowser, member, messageText, openChat, openPerson, screenshot,
  sendMessage, waitForMainScreen,
} from './harness.mjs';

const url = process.env.NATTER_URL;
assert.ok(url, 'NATTER_URL names the nginx in front of the nodes');
const cluster = { url };

const answers = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Asks the test to kill -9 node `i` and waits until it is dead. */
async function killNode(i) {
  console.log(`kill ${i}`);
  const { value, done } = await answers.next();
  assert.ok(!done && value === `killed ${i}`, `the test killed node ${i} (got ${JSON.stringify(value)})`);
}

function step(text) {
  // stderr: stdout carries only the requests to the test.
  process.stderr.write(`cluster pages: ${text}\n`);
}

const texts = (page) => page.locator('#messages .message-text').allTextContents();

/** `from` sends `text`; `to` sees it. */
async function say(from, to, text) {
  await sendMessage(from.page, text);
  await messageText(to.page, text).waitFor({ timeout: 15_000 });
}

/** Both pages show exactly `expected`, in this order. */
async function bothShow(people, expected) {
  for (const person of people) {
    const deadline = Date.now() + 15_000;
    let shown = await texts(person.page);
    while (JSON.stringify(shown) !== JSON.stringify(expected) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      shown = await texts(person.page);
    }
    assert.deepEqual(shown, expected, `${person.name} sees every message in order`);
  }
}

const browser = await launchBrowser();
try {
  const ann = { name: 'ann', ...(await openPerson(browser)) };
  const bob = { name: 'bob', ...(await openPerson(browser)) };
  const people = [ann, bob];
  for (const person of people) {
    step(`${person.name} signs in as a guest and joins Main`);
    await guestLogin(person.page, cluster, person.name);
    await openChat(person.page, 'Main');
    await joinOpenChat(person.page);
  }
  await member(ann.page, 'bob').waitFor();
  await member(bob.page, 'ann').waitFor();

  step('both ways, several rounds (every request may reach another node)');
  const sent = [];
  for (let round = 1; round <= 3; round++) {
    for (const [from, to] of [[ann, bob], [bob, ann]]) {
      const text = `${from.name} ${round}`;
      await say(from, to, text);
      sent.push(text);
    }
  }
  await bothShow(people, sent);

  step('ann reloads: still signed in, the same messages');
  await ann.page.reload();
  await waitForMainScreen(ann.page, 'ann');
  await openChat(ann.page, 'Main');
  await member(ann.page, 'bob').waitFor();
  await bothShow(people, sent);
  await say(bob, ann, 'after the reload');
  sent.push('after the reload');
  await say(ann, bob, 'ann after the reload');
  sent.push('ann after the reload');

  // Set in the pages: still there at the end proves neither was reloaded across the kill.
  for (const person of people) await person.page.evaluate(() => { window.sameDocument = 'yes'; });

  step('node 2 is killed (SIGKILL) mid-conversation');
  await say(ann, bob, 'just before the kill');
  sent.push('just before the kill');
  await killNode(1);
  for (let round = 1; round <= 4; round++) {
    for (const [from, to] of [[bob, ann], [ann, bob]]) {
      const text = `${from.name} after the kill ${round}`;
      await say(from, to, text);
      sent.push(text);
    }
  }
  await bothShow(people, sent);
  for (const person of people) {
    assert.equal(await person.page.evaluate(() => window.sameDocument), 'yes', `${person.name}'s page was not reloaded`);
    assert.equal(await person.page.locator('#auth-screen').isVisible(), false, `${person.name} is still signed in`);
    await person.page.locator('#conn-status[data-status="live"]').waitFor({ state: 'attached' });
  }

  step('bob reloads with one node dead: still signed in, the same messages');
  await bob.page.reload();
  await waitForMainScreen(bob.page, 'bob');
  await openChat(bob.page, 'Main');
  await member(bob.page, 'ann').waitFor();
  // Fewer than last_messages (50) were sent: the reloaded page shows them all.
  await bothShow([bob], sent);
  await say(bob, ann, 'the end');
  await say(ann, bob, 'the end, ann');
  await member(ann.page, 'bob').waitFor();
  await screenshot(ann.page, 'cluster-ann');
  await screenshot(bob.page, 'cluster-bob');
  for (const person of people) assertClean(person.page);
  step('done');
} finally {
  await browser.close();
  answers.return?.();
}
process.exit(0);
