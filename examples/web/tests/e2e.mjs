// End-to-end test of the demo page in a real headless Chromium, driven by playwright-core,
// against a real server with its media engine. Started by run.sh inside a loopback-only network
// namespace; run.sh starts the server and creates the group call's conversation first.
//
// env: CONFAB_ORIGIN (the server), CONFAB_CONVERSATION and CONFAB_MEMBERS (the group call's
// conversation and its members: alice, bob, carol), CONFAB_MIXED_CONVERSATION and
// CONFAB_MIXED_MEMBERS (the mixed call's: alice, a webrtc-rs bot, an aiortc peer), CONFAB_BOT (the
// confab-bot binary), CONFAB_AIORTC_PYTHON and CONFAB_AIORTC_PEER (a Python with aiortc, and
// examples/aiortc/peer.py), SERVER_PID and SERVER_LOG, WORK (a fresh temp dir), ARTIFACTS
// (screenshot dir)
//
// What it covers: serving; sign-in; a group call of three pages where each page plays the two
// others' camera and microphone (getStats on the subscriber connection: framesDecoded rising on 2
// inbound video streams, packets arriving on 2 inbound audio streams; the <video> elements play),
// muting shown on the other pages (call:media-changed and rtc:tracks), a screen share shown as an
// extra playing tile, leaving removing the tile; a mixed call of Chromium, a webrtc-rs bot and an
// aiortc peer, each receiving the two others' audio and video; a call that aiortc starts and
// publishes to before anyone else joins, received by the bot and the page; a direct call that
// rings, is accepted with media flowing both ways, a chat message, a reaction and a raised hand
// shown on the other page (call:data), muted, camera off, screen-shared, re-connected (media
// still flowing) and left; a declined call; a call joined by id and ended; the history panel;
// the grid at 12 and 50 tiles; CallMedia against an in-page stand-in; and page hygiene (no page
// errors, no request
// leaving the server's origin). Screen shares use getDisplayMedia with Chromium's fake capture
// (--use-fake-device-for-media-stream + --use-fake-ui-for-media-stream, which picks the screen).

import { spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const ORIGIN = required('CONFAB_ORIGIN');
const CONVERSATION = required('CONFAB_CONVERSATION');
const MEMBERS = required('CONFAB_MEMBERS').split(',');
const MIXED_CONVERSATION = required('CONFAB_MIXED_CONVERSATION');
const MIXED_MEMBERS = required('CONFAB_MIXED_MEMBERS').split(',');
const BOT_BIN = required('CONFAB_BOT');
const AIORTC_PYTHON = required('CONFAB_AIORTC_PYTHON');
const AIORTC_PEER = required('CONFAB_AIORTC_PEER');
const WORK = required('WORK');
const ARTIFACTS = required('ARTIFACTS');
const SERVER_PID = Number(process.env.SERVER_PID || 0);
const SERVER_LOG = process.env.SERVER_LOG || '';
const TOTAL_TIMEOUT_MS = 480_000;
const STEP_TIMEOUT_MS = 20_000;
/** Media steps: connecting, keyframes and decoding take a while on a loaded 2-core machine. */
const MEDIA_TIMEOUT_MS = 60_000;

function required(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`e2e: ${name} is not set (run this through run.sh)`);
    process.exit(2);
  }
  return v;
}

// ------------------------------------------------------------------ tiny runner

const results = [];
let currentScenario = '';
let scenarioFailed = false;

/** `E2E_ONLY=text`: run only the scenarios whose name contains it (for debugging one). */
const ONLY = process.env.E2E_ONLY || '';

async function scenario(name, body) {
  if (ONLY && name !== 'sign in' && !name.includes(ONLY)) return;
  currentScenario = name;
  scenarioFailed = false;
  console.log(`\n# ${name}`);
  try {
    await body();
  } catch (err) {
    // A failed step aborts its scenario; the reason was printed by step().
    if (!err.reported) record(`${name}: (scenario)`, false, err);
  }
}

async function step(name, fn) {
  const full = `${currentScenario}: ${name}`;
  if (scenarioFailed) {
    results.push({ name: full, ok: false, skipped: true });
    console.log(`  - not run  ${name} (an earlier step failed)`);
    return;
  }
  try {
    await fn();
    record(full, true, null, name);
  } catch (err) {
    record(full, false, err, name);
    scenarioFailed = true;
  }
}

function record(name, ok, err, short = name) {
  results.push({ name, ok });
  if (ok) console.log(`  ok        ${short}`);
  else console.log(`  FAILED    ${name}\n            ${String(err?.message || err).split('\n').join('\n            ')}`);
}

/** A figure worth seeing in the log (frames decoded, packets received). */
function note(text) {
  console.log(`            ${text}`);
}

function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

function eq(actual, expected, what) {
  if (actual !== expected) throw new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}

const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

function serverAlive() {
  if (!SERVER_PID) return true;
  try {
    process.kill(SERVER_PID, 0);
    return true;
  } catch {
    return false;
  }
}

function serverLog() {
  try {
    return SERVER_LOG ? readFileSync(SERVER_LOG, 'utf8') : '';
  } catch {
    return '';
  }
}

// ------------------------------------------------------------------ browser helpers

const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--disable-background-networking',
  '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  // Three tabs are in a call at once: keep the ones in the background running at full speed.
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
  // The talking microphone below is a WebAudio graph, which must run without a click.
  '--autoplay-policy=no-user-gesture-required',
  // --user-data-dir=<fresh temp dir>: passed by launchPersistentContext below.
];

const pageErrors = [];
const foreignRequests = [];

/**
 * Runs in a page before its scripts: microphones become a steady loud tone (an oscillator),
 * camera video stays Chromium's fake one. Chromium's own fake microphone only beeps once a
 * second, which speaker detection rightly does not take for speech; this page talks.
 */
function talkingMicrophone() {
  const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (constraints) => {
    const stream = await original(constraints);
    if (!constraints?.audio) return stream;
    const ctx = new AudioContext();
    const tone = ctx.createOscillator();
    const gain = ctx.createGain();
    gain.gain.value = 0.5; // about -9 dBov: a raised voice
    const out = ctx.createMediaStreamDestination();
    tone.connect(gain).connect(out);
    tone.start();
    for (const t of stream.getAudioTracks()) {
      stream.removeTrack(t);
      t.stop();
    }
    stream.addTrack(out.stream.getAudioTracks()[0]);
    return stream;
  };
}

/** A tab with its diagnostics hooked up. */
async function openPage(context, label, origin) {
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  page.on('pageerror', (err) => pageErrors.push(`${label}: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') pageErrors.push(`${label} console: ${msg.text()}`);
  });
  const host = new URL(origin).host;
  page.on('request', (req) => {
    const url = new URL(req.url());
    if (url.protocol !== 'data:' && url.host !== host) foreignRequests.push(`${label}: ${req.url()}`);
  });
  page.on('websocket', (ws) => {
    if (new URL(ws.url()).host !== host) foreignRequests.push(`${label}: ${ws.url()}`);
  });
  return page;
}

const shot = (page, name) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`) });

/** Waits until `fn(arg)` is truthy in the page; fails with `what`. */
async function until(page, what, fn, arg, timeout = STEP_TIMEOUT_MS) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 100 });
  } catch {
    throw new Error(`timed out waiting for: ${what}`);
  }
}

const visible = (page, selector, timeout) =>
  until(page, `${selector} visible`, (s) => {
    const el = document.querySelector(s);
    return el && !el.closest('[hidden]') && el.getClientRects().length > 0;
  }, selector, timeout);

const gone = (page, selector, timeout) =>
  until(page, `${selector} gone`, (s) => !document.querySelector(s), selector, timeout);

const tile = (user, source = 'camera') => `#grid .tile[data-user="${user}"][data-source="${source}"]`;

async function signIn(page, origin, name) {
  await page.goto(origin);
  await visible(page, '#signin-form');
  await page.fill('#signin-name', name);
  await visible(page, '#signin-id');
  await page.click('#signin-form button[type=submit]');
  await visible(page, '#lobby-view');
  await until(page, 'connection online', () => document.querySelector('#conn').dataset.state === 'open');
}

async function startCall(page, invitees, conversation) {
  await page.fill('#call-invitees', invitees);
  if (conversation) {
    if (!(await page.evaluate(() => document.querySelector('#call-form details').open))) {
      await page.click('#call-form details summary');
    }
    await page.fill('#call-conversation', conversation);
  }
  await page.click('#call-start');
  await visible(page, '#call-view');
  if (conversation) await page.$eval('#call-conversation', (el) => (el.value = '')); // later calls are direct
}

const callId = (page) => page.evaluate(() => window.confabApp.state.call?.id ?? null);

/**
 * The history panel's entry for call `id`. With `status`, waits until the entry shows it: the
 * panel may still hold an entry fetched while the call was live until its refresh lands.
 */
async function historyTop(page, id, status) {
  await until(page, `history lists call ${id}`, (i) => !!document.querySelector(`#history-list [data-call-id="${i}"]`), id);
  if (status) {
    await until(
      page,
      `history shows call ${id} as ${status}`,
      ([i, st]) => document.querySelector(`#history-list [data-call-id="${i}"]`)?.dataset.status === st,
      [id, status],
    ).catch(() => {}); // the caller's eq() reports what the entry says instead
  }
  return page.evaluate((i) => {
    const li = document.querySelector(`#history-list [data-call-id="${i}"]`);
    return { status: li.dataset.status, text: li.textContent.replace(/\s+/g, ' ').trim() };
  }, id);
}

// ------------------------------------------------------------------ media helpers

/**
 * Runs in the page: the inbound RTP streams of the subscriber connection (window.confabDebug),
 * each mapped to its publisher and source through the SDP's msid and the `rtc:tracks` list.
 */
async function inboundStats() {
  const d = window.confabDebug;
  const pc = d?.subscriber;
  if (!pc || !pc.remoteDescription) return { state: pc?.connectionState ?? 'none', streams: [] };
  const msid = new Map();
  for (const section of pc.remoteDescription.sdp.split(/\r?\nm=/).slice(1)) {
    const mid = /^a=mid:(\S+)/m.exec(section)?.[1];
    const track = /^a=msid:\S+ (\S+)/m.exec(section)?.[1];
    if (mid && track) msid.set(mid, track);
  }
  const info = new Map(d.trackInfo.map((t) => [t.track_id, t]));
  const streams = [];
  (await pc.getStats()).forEach((s) => {
    if (s.type !== 'inbound-rtp') return;
    const t = info.get(msid.get(s.mid)) || info.get(s.trackIdentifier);
    streams.push({
      id: s.id,
      kind: s.kind,
      key: t ? `${t.user_id}/${t.source}` : `?/${s.mid}`,
      frames: s.framesDecoded ?? 0,
      packets: s.packetsReceived ?? 0,
      width: s.frameWidth ?? 0,
      height: s.frameHeight ?? 0,
    });
  });
  return { state: pc.connectionState, streams };
}

/**
 * Polls the page's subscriber stats until every expected video (`user/source`) shows
 * framesDecoded rising and every expected audio shows packetsReceived rising, compared with
 * the first sample of that stream. Returns the last sample, for the log.
 */
async function mediaFlows(page, label, { video = [], audio = [], videoPackets = [] }, timeout = MEDIA_TIMEOUT_MS) {
  const first = new Map();
  let last = { state: 'none', streams: [] };
  let rising = { video: new Set(), audio: new Set(), videoPackets: new Set() };
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    last = await page.evaluate(inboundStats);
    rising = { video: new Set(), audio: new Set(), videoPackets: new Set() };
    for (const s of last.streams) {
      const f = first.get(s.id);
      if (!f) {
        first.set(s.id, s);
        continue;
      }
      if (s.kind === 'video' && s.frames > f.frames) rising.video.add(s.key);
      if (s.kind === 'video' && s.packets > f.packets) rising.videoPackets.add(s.key);
      if (s.kind === 'audio' && s.packets > f.packets) rising.audio.add(s.key);
    }
    const want = { video, audio, videoPackets };
    if (Object.entries(want).every(([k, keys]) => keys.every((key) => rising[k].has(key)))) {
      const figures = last.streams
        .filter((s) => rising[s.kind].has(s.key) || (s.kind === 'video' && videoPackets.includes(s.key)))
        .map((s) => (s.kind === 'video' ? `${s.key} ${s.frames} frames ${s.packets} packets ${s.width}x${s.height}` : `${s.key} ${s.packets} packets`));
      note(`${label}: ${rising.video.size} video + ${rising.audio.size} audio rising: ${figures.join(', ')}`);
      return { last, rising };
    }
    await sleep(1000);
  }
  const seen = last.streams.map((s) => `${s.kind} ${s.key} frames=${s.frames} packets=${s.packets}`).join('; ');
  throw new Error(
    `${label}: media not flowing within ${timeout / 1000} s (subscriber ${last.state}); ` +
      `want video [${video}] audio [${audio}] video packets [${videoPackets}], rising video [${[...rising.video]}] ` +
      `audio [${[...rising.audio]}] video packets [${[...rising.videoPackets]}]; streams: ${seen || 'none'}`,
  );
}

/** The page's inbound streams now (`{key, kind, packets, frames}` each), for the log. */
async function inboundNow(page) {
  return (await page.evaluate(inboundStats)).streams;
}

/** The frame width of each inbound video (`user/source` → pixels), from the subscriber's stats. */
async function videoSizes(page) {
  const { streams } = await page.evaluate(inboundStats);
  return Object.fromEntries(streams.filter((s) => s.kind === 'video').map((s) => [s.key, s.width]));
}

/** Calls `fn` every 500 ms until it returns something truthy, and returns that. */
async function poll(what, fn, timeout = MEDIA_TIMEOUT_MS) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    const value = await fn();
    if (value) return value;
    await sleep(500);
  }
  throw new Error(`timed out waiting for: ${what}`);
}

/** Packets received so far on one inbound stream (`user/source`). */
async function packetsOf(page, key) {
  const { streams } = await page.evaluate(inboundStats);
  return streams.find((s) => s.key === key)?.packets ?? 0;
}

/** Waits until the <video> of a tile plays: has frames, is not paused, and its time advances. */
async function videoPlays(page, label, selector, timeout = MEDIA_TIMEOUT_MS) {
  const probe = (s) => {
    const v = document.querySelector(`${s} video`);
    if (!v) return { t: -1, why: 'no video element' };
    if (!v.srcObject) return { t: -1, why: 'no stream' };
    if (v.paused) return { t: -1, why: 'paused' };
    if (v.readyState < 2 || !v.videoWidth) return { t: -1, why: `readyState ${v.readyState}, ${v.videoWidth}x${v.videoHeight}` };
    return { t: v.currentTime, w: v.videoWidth, h: v.videoHeight };
  };
  const deadline = Date.now() + timeout;
  let start = null;
  let last;
  while (Date.now() < deadline) {
    last = await page.evaluate(probe, selector);
    if (last.t >= 0) {
      if (start === null) start = last.t;
      else if (last.t > start + 0.5) return last;
    }
    await sleep(500);
  }
  throw new Error(`${label}: ${selector} video does not play (${last?.why ?? `time stuck at ${last?.t}`})`);
}

/** A catch handler that adds the page's media state to a failure. */
const explain = (page) => async (err) => {
  const state = await page.evaluate(() => ({
    tracks: window.confabDebug.trackInfo.map((t) => `${t.user_id}/${t.source}${t.muted ? ' muted' : ''}`),
    remote: window.confabDebug.remote.map((t) => `${t.user_id}/${t.source} ${t.ready_state}`),
    transceivers: (window.confabDebug.subscriber?.getTransceivers() ?? []).map((t) => `${t.mid}:${t.currentDirection}`),
    participants: (window.confabApp.state.call?.participants ?? []).map((p) => `${p.user_id} ${p.status}${p.screen_sharing ? ' sharing' : ''}`),
  }));
  throw new Error(`${err.message}\nrtc:tracks [${state.tracks}]; shown [${state.remote}]; subscriber transceivers [${state.transceivers}]; participants [${state.participants}]`);
};

/** The participant and the `rtc:tracks` entry of `user`'s source, as one page sees them. */
const remoteState = (page, user, source) =>
  page.evaluate(
    ([u, src]) => ({
      participant: window.confabApp.state.call?.participants.find((p) => p.user_id === u) ?? null,
      track: window.confabDebug.trackInfo.find((t) => t.user_id === u && t.source === src) ?? null,
    }),
    [user, source],
  );

// ------------------------------------------------------------------ other clients in the call

/** A token for `user` from the dev token route (`confab serve --dev`). */
async function devToken(user, name) {
  const res = await fetch(`${ORIGIN}/api/v1/dev/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user_id: user, name }),
  });
  eq(res.status, 200, `POST /api/v1/dev/token for ${user}`);
  return (await res.json()).token;
}

/**
 * Starts a client process that prints JSON lines (confab-bot, peer.py): `{"event":"joined"}`,
 * `{"event":"progress"}`, then `{"event":"result"}` or `{"event":"error"}`. `joined` and `result`
 * resolve with those lines; both reject on an error line or an exit without them.
 */
function startClient(label, command, args) {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const stderr = [];
  const waiters = { joined: [], result: [] };
  const seen = {};
  let failure = null;
  const settle = () => {
    for (const [event, list] of Object.entries(waiters)) {
      for (const w of list.splice(0)) {
        if (seen[event]) w.resolve(seen[event]);
        else if (failure) w.reject(new Error(`${label}: ${failure}\n${stderr.join('').slice(-3000)}`));
        else list.push(w);
      }
    }
  };
  let buffered = '';
  child.stdout.on('data', (chunk) => {
    buffered += chunk;
    let nl;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl).trim();
      buffered = buffered.slice(nl + 1);
      if (!line) continue;
      let msg;
      try {
        msg = JSON.parse(line);
      } catch {
        continue;
      }
      if (msg.event === 'error') failure = `error: ${msg.message}`;
      else seen[msg.event] = msg;
    }
    settle();
  });
  // Kept whole with the screenshots, for a failure's post-mortem.
  const log = createWriteStream(join(ARTIFACTS, `${label}.log`));
  child.stderr.on('data', (chunk) => {
    stderr.push(String(chunk));
    log.write(chunk);
  });
  child.on('close', () => log.end());
  child.on('exit', (code, signal) => {
    if (!seen.result) failure = failure || `exited (${signal ?? code}) without a result`;
    settle();
  });
  child.on('error', (err) => {
    failure = `could not start ${command}: ${err.message}`;
    settle();
  });
  const wait = (event, timeout) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${label}: no "${event}" within ${timeout / 1000} s\n${stderr.join('').slice(-3000)}`)), timeout);
      waiters[event].push({
        resolve: (v) => (clearTimeout(timer), resolve(v)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
      settle();
    });
  return {
    joined: (timeout = STEP_TIMEOUT_MS) => wait('joined', timeout),
    result: (timeout = MEDIA_TIMEOUT_MS) => wait('result', timeout),
    /** The latest `progress` line, or null before the first. */
    progress: () => seen.progress ?? null,
    kill: () => child.exitCode === null && child.kill('SIGKILL'),
    stderr: () => stderr.join('').slice(-4000),
  };
}

/** Sums a client's `tracks` report over `user`'s tracks of `kind`: RTP packets, decoded frames. */
function receivedFrom(result, user, kind) {
  const tracks = (result.tracks || []).filter((t) => t.user_id === user && t.kind === kind);
  return {
    packets: tracks.reduce((n, t) => n + (t.rtp_packets || 0), 0),
    frames: tracks.reduce((n, t) => n + (t.frames_decoded || 0), 0),
  };
}

// ------------------------------------------------------------------ scenarios

async function main() {
  mkdirSync(ARTIFACTS, { recursive: true });
  const origin = ORIGIN;
  console.log(`server: ${origin}, group conversation ${CONVERSATION} (${MEMBERS.join(', ')})`);
  assert(MEMBERS.length === 3, 'the conversation has three members');
  const [A, B, C] = MEMBERS;
  const nameOf = (id) => id[0].toUpperCase() + id.slice(1);

  await scenario('serving', async () => {
    await step('GET / is the page, no-cache', async () => {
      const res = await fetch(`${origin}/`);
      eq(res.status, 200, 'status');
      assert(res.headers.get('content-type').startsWith('text/html'), `content-type ${res.headers.get('content-type')}`);
      eq(res.headers.get('cache-control'), 'no-cache', 'cache-control');
      assert((await res.text()).includes('<script type="module" src="app.js">'), 'index.html loads app.js');
    });
    await step('files have their content types', async () => {
      for (const [path, type] of [['/sdk/confab.js', 'text/javascript'], ['/app.js', 'text/javascript'], ['/style.css', 'text/css'], ['/favicon.svg', 'image/svg+xml']]) {
        const res = await fetch(origin + path);
        eq(res.status, 200, `${path} status`);
        assert(res.headers.get('content-type').startsWith(type), `${path}: ${res.headers.get('content-type')}`);
      }
    });
    await step('unknown paths and the tests stay 404 JSON', async () => {
      for (const path of ['/nope', '/tests/e2e.mjs', '/tests/package.json', '/index.htm', '/confab.js', '/sdk/package.json']) {
        const res = await fetch(origin + path);
        eq(res.status, 404, `${path} status`);
        eq((await res.json()).error.code, 'NOT_FOUND', `${path} error code`);
      }
    });
  });

  const context = await chromium.launchPersistentContext(join(WORK, 'chromium-profile'), {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: FLAGS,
    viewport: { width: 1366, height: 800 },
  });
  const alice = await openPage(context, A, origin);
  const bob = await openPage(context, B, origin);
  await bob.addInitScript(talkingMicrophone);
  const carol = await openPage(context, C, origin);
  const pages = { [A]: alice, [B]: bob, [C]: carol };

  await scenario('sign in', async () => {
    await step(`${A} signs in with a name`, async () => {
      await page0(alice, origin, nameOf(A));
      await signIn(alice, origin, nameOf(A));
      await until(alice, `#me names ${A}`, (a) => document.querySelector('#me').textContent.includes(a), A);
      await shot(alice, '02-lobby-empty');
    });
    await step(`${B} and ${C} sign in with a name`, async () => {
      await signIn(bob, origin, nameOf(B));
      await signIn(carol, origin, nameOf(C));
    });
  });

  // ---------------------------------------------------------------- group call of three
  await scenario(`group call of three in "${CONVERSATION}"`, async () => {
    await step(`${A} starts a group call; ${B} and ${C} are rung`, async () => {
      await startCall(alice, `${B}, ${C}`, CONVERSATION);
      for (const u of [B, C]) await visible(alice, `${tile(u)}[data-status="ringing"]`);
      for (const page of [bob, carol]) {
        await until(page, 'dialog open', () => document.querySelector('#incoming').open);
        eq(await page.textContent('#incoming-title'), `${nameOf(A)} is calling`, 'dialog title');
        eq(await page.textContent('#incoming-accept'), 'Join', 'accept button of a group call');
      }
      await shot(carol, '03-group-incoming');
    });
    await step(`${B} and ${C} join; every page shows three tiles with names`, async () => {
      await bob.click('#incoming-accept');
      await carol.click('#incoming-accept');
      for (const [me, page] of Object.entries(pages)) {
        await visible(page, '#call-view');
        for (const u of MEMBERS) await visible(page, `${tile(u)}[data-status="joined"]`);
        await until(page, 'status ongoing', () => document.querySelector('#call-status').textContent === 'ongoing');
        eq(await page.textContent(`${tile(me)} .name`), `${nameOf(me)} (you)`, `${me}'s own tile`);
        for (const u of MEMBERS.filter((x) => x !== me)) eq(await page.textContent(`${tile(u)} .name`), nameOf(u), `${u}'s tile on ${me}'s page`);
        eq(await page.textContent('#call-title'), `${CONVERSATION} · group call`, 'call title');
      }
    });
    await step('each page decodes 2 inbound videos and receives 2 inbound audios', async () => {
      for (const [me, page] of Object.entries(pages)) {
        const others = MEMBERS.filter((u) => u !== me);
        await mediaFlows(page, me, { video: others.map((u) => `${u}/camera`), audio: others.map((u) => `${u}/microphone`) });
      }
    });
    await step('each page shows two remote videos that really play', async () => {
      for (const [me, page] of Object.entries(pages)) {
        for (const u of MEMBERS.filter((x) => x !== me)) {
          const v = await videoPlays(page, me, tile(u));
          eq(await page.getAttribute(tile(u), 'data-video'), 'true', `${u}'s tile on ${me}'s page shows video`);
          assert(v.w >= 160, `${u}'s video on ${me}'s page is ${v.w}x${v.h}`);
        }
      }
      // Let the quality indicators (call:quality, every 5 s) arrive before the pictures.
      await until(alice, 'a quality indicator', () => !!document.querySelector('#grid .tile[data-quality]'), undefined, MEDIA_TIMEOUT_MS);
      // Bob's microphone is a steady tone (talkingMicrophone); the others' fake ones only beep.
      for (const page of [alice, carol]) {
        await until(page, `${B} is the active speaker (call:active-speakers)`, (u) => window.confabApp.state.speakers[0] === u, B, MEDIA_TIMEOUT_MS);
        await visible(page, `${tile(B)}.speaking`);
      }
      const seen = await alice.evaluate(() => ({
        quality: [...window.confabApp.state.quality.values()].map((q) => `${q.user_id}=${q.score}`),
        speakers: window.confabApp.state.speakers,
      }));
      note(`${A}: call:quality scores [${seen.quality}], active speakers [${seen.speakers}]`);
      await shot(alice, `04-group-${A}`);
      await shot(bob, `05-group-${B}`);
      await shot(carol, `06-group-${C}`);
    });
    await step(`${A}'s page asks each video in the layer its tile needs; pinning ${C} brings her top layer`, async () => {
      // Every camera is published as three RID layers (confab.js); the page picks one per tile.
      const rids = await bob.evaluate(() => window.confabDebug.publisher.getSenders().find((s) => s.track?.kind === 'video')?.getParameters().encodings.map((e) => e.rid));
      eq(String(rids), 'q,h,f', `${B}'s camera encodings`);
      const before = await videoSizes(alice);
      note(`${A} receives before pinning: ${JSON.stringify(before)}`);
      await alice.hover(tile(C));
      await alice.click(`${tile(C)} .pin`);
      await visible(alice, '#grid.pinned');
      await visible(alice, `${tile(C)}.pinned`);
      await until(alice, `${C}'s tile asks for the high layer, ${B}'s (small now) for the low one`, ([c, b]) =>
        document.querySelector(c)?.dataset.layer === 'high' && document.querySelector(b)?.dataset.layer === 'low', [tile(C), tile(B)]);
      const [c, b] = [`${C}/camera`, `${B}/camera`];
      const pinned = await poll(`${C}'s video wider than before and ${B}'s narrower on ${A}'s page`, async () => {
        const sizes = await videoSizes(alice);
        return sizes[c] > before[c] && sizes[b] < before[b] && sizes[b] > 0 ? sizes : null;
      }).catch(explain(alice));
      note(`${A} receives with ${C} pinned: ${JSON.stringify(pinned)}`);
      await videoPlays(alice, A, tile(C));
      await shot(alice, `07-group-${C}-pinned`);
    });
    await step(`a tile scrolled out of sight gets no video; back in sight it plays again`, async () => {
      // Narrow: the small tiles under the pinned one stack one per row, so ${B}'s is below the fold.
      await alice.setViewportSize({ width: 420, height: 800 });
      await until(alice, `${B}'s tile is off screen and asks for nothing`, (b) => document.querySelector(b)?.dataset.layer === 'off', tile(B));
      await sleep(1500); // packets in flight, and the server's stop
      const a = await packetsOf(alice, `${B}/camera`);
      await sleep(3000);
      const b = await packetsOf(alice, `${B}/camera`);
      eq(b - a, 0, `${B}/camera packets received by ${A} in 3 s while off screen`);
      await mediaFlows(alice, A, { video: [`${C}/camera`], audio: [`${B}/microphone`] });
      await alice.setViewportSize({ width: 1366, height: 800 });
      await alice.click(`${tile(C)} .pin`);
      await gone(alice, '#grid.pinned');
      await until(alice, `${B}'s tile asks for video again`, (b) => ['low', 'medium', 'high'].includes(document.querySelector(b)?.dataset.layer), tile(B));
      await mediaFlows(alice, A, { video: [`${B}/camera`, `${C}/camera`] });
    });
    await step(`${C} mutes; ${A} and ${B} show her muted (call:media-changed and rtc:tracks)`, async () => {
      await carol.click('#btn-mic');
      await visible(carol, '#btn-mic[aria-pressed="true"]');
      for (const page of [alice, bob]) {
        await visible(page, `${tile(C)}[data-muted="true"] .ic-muted`);
        await until(page, `${C} muted in the call state (call:media-changed)`, (u) =>
          window.confabApp.state.call.participants.find((p) => p.user_id === u)?.audio_muted === true, C);
        await until(page, `${C}'s microphone muted in rtc:tracks`, (u) =>
          window.confabDebug.trackInfo.find((t) => t.user_id === u && t.source === 'microphone')?.muted === true, C);
        eq(await page.getAttribute(tile(B), 'data-muted'), 'false', `${B} not muted`);
      }
      await shot(alice, `07-group-${C}-muted`);
      await carol.click('#btn-mic');
      for (const page of [alice, bob]) {
        await visible(page, `${tile(C)}[data-muted="false"]`);
        await until(page, `${C}'s microphone unmuted in rtc:tracks`, (u) =>
          window.confabDebug.trackInfo.find((t) => t.user_id === u && t.source === 'microphone')?.muted === false, C);
      }
    });
    await step(`${B} shares his screen; ${A} and ${C} show an extra tile that plays`, async () => {
      await bob.click('#btn-screen');
      await visible(bob, tile(B, 'screen'));
      for (const [me, page] of [[A, alice], [C, carol]]) {
        await visible(page, `${tile(B, 'screen')}[data-video="true"]`, MEDIA_TIMEOUT_MS);
        await videoPlays(page, me, tile(B, 'screen'));
        await visible(page, `${tile(B)} .ic-sharing`);
        eq(await page.locator('#grid .tile').count(), 4, `tiles on ${me}'s page`);
        await mediaFlows(page, me, { video: [`${B}/camera`, `${B}/screen`, `${me === A ? C : A}/camera`] });
      }
      await shot(alice, `08-group-${B}-sharing`);
      await bob.click('#btn-screen');
      for (const page of [alice, carol]) await gone(page, tile(B, 'screen'), MEDIA_TIMEOUT_MS).catch(explain(page));
    });
    await step(`${C} leaves; her tile disappears on the other pages, their media goes on`, async () => {
      await carol.click('#btn-leave');
      await visible(carol, '#lobby-view');
      for (const [me, page] of [[A, alice], [B, bob]]) {
        await gone(page, tile(C));
        eq(await page.locator('#grid .tile').count(), 2, `tiles on ${me}'s page`);
        const other = me === A ? B : A;
        await mediaFlows(page, me, { video: [`${other}/camera`], audio: [`${other}/microphone`] });
      }
      await shot(alice, `09-group-${C}-left`);
    });
    await step(`${A} ends the call for all; everyone is back in the lobby`, async () => {
      await alice.click('#btn-end');
      for (const page of [alice, bob, carol]) await visible(page, '#lobby-view');
    });
  });

  // ---------------------------------------------------------------- mixed call
  await scenario('mixed call: Chromium, a webrtc-rs bot and an aiortc peer', async () => {
    const [me, rsbot, pybot] = MIXED_MEMBERS;
    eq(me, A, 'the page of the mixed call');
    const clients = [];
    try {
      let id;
      await step(`${A} starts a call in "${MIXED_CONVERSATION}"; the bot and aiortc join it by id`, async () => {
        await startCall(alice, `${rsbot}, ${pybot}`, MIXED_CONVERSATION);
        id = await callId(alice);
        assert(id, 'the page knows its call id');
        const seconds = '25';
        clients.push(
          startClient(rsbot, BOT_BIN, ['--url', ORIGIN, '--token', await devToken(rsbot, 'Rust bot'), '--user', rsbot, '--join', id, '--duration', seconds]),
          startClient(pybot, AIORTC_PYTHON, [AIORTC_PEER, '--url', ORIGIN, '--token', await devToken(pybot, 'aiortc'), '--user', pybot, '--join', id, '--duration', seconds, '--timeout', '20', '--log-sdp']),
        );
        for (const c of clients) await c.joined();
        for (const u of [rsbot, pybot]) await visible(alice, `${tile(u)}[data-status="joined"]`);
      });
      await step(`${A}'s page receives both clients: aiortc's video decodes, the bot's video and both audios arrive`, async () => {
        // The bot's VP8 is filler that no decoder can use, so its video is checked by packets.
        await mediaFlows(alice, A, { video: [`${pybot}/camera`], videoPackets: [`${rsbot}/camera`], audio: [`${rsbot}/microphone`, `${pybot}/microphone`] });
        await videoPlays(alice, A, tile(pybot));
        await shot(alice, `10-mixed-${A}`);
      });
      const results = {};
      await step('the bot and aiortc each receive the two others\' audio and video', async () => {
        [results[rsbot], results[pybot]] = await Promise.all(clients.map((c) => c.result()));
        const MIN = 50; // packets of each kind: 1 s of audio, well under a second of video
        const figures = [];
        for (const [who, others] of [[rsbot, [A, pybot]], [pybot, [A, rsbot]]]) {
          for (const from of others) {
            for (const kind of ['audio', 'video']) {
              const got = receivedFrom(results[who], from, kind);
              figures.push(`${who} <- ${from} ${kind}: ${got.packets} packets${who === pybot && kind === 'video' ? `, ${got.frames} frames decoded` : ''}`);
              const client = clients[who === rsbot ? 0 : 1];
              assert(got.packets >= MIN, `${who} received ${got.packets} ${kind} packets from ${from} (want >= ${MIN}); result: ${JSON.stringify(results[who])}\n${who}'s stderr:\n${client.stderr()}`);
            }
          }
        }
        // aiortc really decodes the browser's VP8 (the bot's filler it cannot).
        const decoded = receivedFrom(results[pybot], A, 'video').frames;
        assert(decoded > 10, `aiortc decoded ${decoded} frames of ${A}'s video`);
        note(figures.join('; '));
      });
      await step(`${A} ends the call`, async () => {
        await alice.click('#btn-end');
        await visible(alice, '#lobby-view');
      });
    } finally {
      for (const c of clients) c.kill();
      // Whatever failed, the page must be back in the lobby for the scenarios after this one.
      if (await alice.isVisible('#call-view')) {
        await alice.click('#btn-end').catch(() => {});
        await visible(alice, '#lobby-view').catch(() => {});
      }
    }
  });

  // ---------------------------------------------------------------- aiortc publishes first
  await scenario('aiortc publishes first: a webrtc-rs bot and Chromium receive it', async () => {
    const [me, rsbot, pybot] = MIXED_MEMBERS;
    eq(me, A, 'the page of the mixed call');
    const clients = [];
    try {
      let id;
      let py;
      await step(`aiortc starts a call in "${MIXED_CONVERSATION}" and its publisher connects before anyone joins`, async () => {
        py = startClient(`${pybot}-first`, AIORTC_PYTHON, [
          AIORTC_PEER, '--url', ORIGIN, '--token', await devToken(pybot, 'aiortc'), '--user', pybot,
          '--conversation', MIXED_CONVERSATION, '--invite', A, '--invite', rsbot, '--duration', '15', '--timeout', '20', '--log-sdp',
        ]);
        clients.push(py);
        id = (await py.joined()).call_id;
        assert(id, 'aiortc reports its call id');
        await poll('aiortc\'s publisher connection connected', () => py.progress()?.publisher_state === 'connected');
      });
      await step(`the bot joins by id and ${A} accepts the ring`, async () => {
        clients.push(startClient(`${rsbot}-second`, BOT_BIN, ['--url', ORIGIN, '--token', await devToken(rsbot, 'Rust bot'), '--user', rsbot, '--join', id, '--duration', '8']));
        await until(alice, 'dialog open', () => document.querySelector('#incoming').open);
        await alice.click('#incoming-accept');
        await visible(alice, '#call-view');
        await clients[1].joined();
      });
      await step(`${A}'s page decodes aiortc's video and receives its audio`, async () => {
        await mediaFlows(alice, A, { video: [`${pybot}/camera`], audio: [`${pybot}/microphone`] });
        await videoPlays(alice, A, tile(pybot));
        await shot(alice, `11-aiortc-first-${A}`);
      });
      await step('the bot receives aiortc\'s audio and video, keyframes included', async () => {
        const result = await clients[1].result();
        const MIN = 50;
        const audio = receivedFrom(result, pybot, 'audio');
        const video = receivedFrom(result, pybot, 'video');
        const keyframes = (result.tracks || []).filter((t) => t.user_id === pybot && t.kind === 'video').reduce((n, t) => n + (t.keyframes || 0), 0);
        const why = `result: ${JSON.stringify(result)}\n${rsbot}'s stderr:\n${clients[1].stderr()}`;
        assert(audio.packets >= MIN, `${rsbot} received ${audio.packets} audio packets from ${pybot} (want >= ${MIN}); ${why}`);
        assert(video.packets >= MIN, `${rsbot} received ${video.packets} video packets from ${pybot} (want >= ${MIN}); ${why}`);
        assert(keyframes >= 1, `${rsbot} saw no keyframe of ${pybot}'s video; ${why}`);
        const page = (await inboundNow(alice)).filter((s) => s.key.startsWith(`${pybot}/`));
        note(
          `${rsbot} <- ${pybot}: audio ${audio.packets} packets, video ${video.packets} packets (${keyframes} keyframes); ` +
            page.map((s) => `${A} <- ${s.key}: ${s.packets} packets${s.kind === 'video' ? `, ${s.frames} frames decoded` : ''}`).join('; '),
        );
      });
      await step(`${A} leaves; aiortc's report ends cleanly`, async () => {
        await alice.click('#btn-leave');
        await visible(alice, '#lobby-view');
        const result = await py.result();
        eq(result.publisher_state, 'connected', 'aiortc publisher state at the end');
      });
    } finally {
      for (const c of clients) c.kill();
      if (await alice.isVisible('#call-view')) {
        await alice.click('#btn-leave').catch(() => {});
        await visible(alice, '#lobby-view').catch(() => {});
      }
    }
  });

  // ---------------------------------------------------------------- direct call
  let first;
  await scenario('direct call: ring, accept, media, mute, screen, reconnect, leave', async () => {
    await step(`${A} calls ${B} and sees him ringing`, async () => {
      await startCall(alice, B);
      await visible(alice, `${tile(B)}[data-status="ringing"]`);
      await visible(alice, tile(A));
      eq(await alice.textContent('#call-status'), 'Ringing…', 'status pill');
      first = await callId(alice);
      assert(first, 'alice has a call id');
      await shot(alice, '10-alice-ringing');
    });
    await step(`${B}'s page shows the incoming-call dialog`, async () => {
      await until(bob, 'dialog open', () => document.querySelector('#incoming').open);
      eq(await bob.textContent('#incoming-title'), `${nameOf(A)} is calling`, 'dialog title');
      eq(await bob.textContent('#incoming-accept'), 'Accept', 'accept button');
      await shot(bob, '11-bob-incoming');
    });
    await step(`${B} accepts; both see both tiles with names`, async () => {
      await bob.click('#incoming-accept');
      for (const page of [alice, bob]) {
        await visible(page, '#call-view');
        await visible(page, `${tile(A)}[data-status="joined"]`);
        await visible(page, `${tile(B)}[data-status="joined"]`);
        await until(page, 'status ongoing', () => document.querySelector('#call-status').textContent === 'ongoing');
      }
      eq(await alice.textContent(`${tile(A)} .name`), `${nameOf(A)} (you)`, "alice's own tile");
      eq(await alice.textContent(`${tile(B)} .name`), nameOf(B), "bob's tile on alice's page");
      eq(await bob.textContent(`${tile(A)} .name`), nameOf(A), "alice's tile on bob's page");
      assert(!(await bob.evaluate(() => document.querySelector('#incoming').open)), 'dialog closed');
      eq(await bob.evaluate(() => window.confabApp.state.call.id), first, 'same call on both pages');
    });
    await step('media flows both ways: each page plays the other', async () => {
      await mediaFlows(alice, A, { video: [`${B}/camera`], audio: [`${B}/microphone`] });
      await mediaFlows(bob, B, { video: [`${A}/camera`], audio: [`${A}/microphone`] });
      await videoPlays(alice, A, tile(B));
      await videoPlays(bob, B, tile(A));
      for (const page of [alice, bob]) assert(await page.locator('#media-note').isHidden(), 'no "media unavailable" note');
      await shot(alice, '12-alice-in-call');
      await shot(bob, '13-bob-in-call');
    });
    await step(`${A} chats, reacts and raises her hand; ${B}'s page shows it (call:data)`, async () => {
      const hello = 'Hello Bob, can you hear me?';
      await alice.click('#btn-chat');
      await alice.fill('#chat-input', hello);
      await alice.click('#chat-form button[type=submit]');
      await visible(alice, '#chat-log .chat-msg.mine');
      await until(bob, 'an unread badge on the chat button', () => document.querySelector('#btn-chat .badge')?.textContent === '1');
      await bob.click('#btn-chat');
      const msg = `#chat-log .chat-msg[data-from="${A}"]`;
      await visible(bob, msg);
      eq(await bob.textContent(`${msg} .chat-from`), nameOf(A), 'sender name');
      eq(await bob.textContent(`${msg} .chat-text`), hello, 'message text');
      await alice.click('#btn-hand');
      await visible(bob, `${tile(A)}[data-hand="true"] .hand`);
      await alice.click('#reactions [data-emoji="🎉"]');
      await visible(bob, `${tile(A)} .reaction`);
      eq(await bob.textContent(`${tile(A)} .reaction`), '🎉', 'the reaction floats over her tile');
      await shot(bob, '13b-bob-sees-chat-reaction-hand');
      await bob.fill('#chat-input', 'Loud and clear');
      await bob.press('#chat-input', 'Enter');
      await visible(alice, `#chat-log .chat-msg[data-from="${B}"]`);
      eq(await alice.textContent(`#chat-log .chat-msg[data-from="${B}"] .chat-text`), 'Loud and clear', "bob's reply");
      await alice.click('#btn-hand');
      await visible(bob, `${tile(A)}[data-hand="false"]`);
      await gone(bob, `${tile(A)} .reaction`);
      for (const page of [alice, bob]) await page.click('#btn-chat');
    });
    await step(`${A} mutes; ${B}'s page shows her muted`, async () => {
      await alice.click('#btn-mic');
      await visible(bob, `${tile(A)}[data-muted="true"] .ic-muted`);
      // Alice's own button follows her ack and event, which may land after Bob's event.
      await visible(alice, '#btn-mic[aria-pressed="true"]');
      eq(await bob.getAttribute(tile(B), 'data-muted'), 'false', 'bob himself unmuted');
      await until(bob, `${A}'s microphone muted in rtc:tracks`, (u) =>
        window.confabDebug.trackInfo.find((t) => t.user_id === u && t.source === 'microphone')?.muted === true, A);
    });
    await step(`${A} turns her camera off; ${B}'s page shows it`, async () => {
      await alice.click('#btn-cam');
      await visible(bob, `${tile(A)} .ic-camoff`);
      await visible(bob, `${tile(A)}[data-video="false"] .avatar`);
      await visible(alice, `${tile(A)}[data-video="false"] .avatar`);
      await shot(bob, '14-bob-sees-alice-muted');
      await alice.click('#btn-cam');
      await visible(bob, `${tile(A)}[data-video="true"]`);
    });
    await step(`${A} shares her screen; both pages show a screen tile, ${B}'s plays it`, async () => {
      await alice.click('#btn-screen');
      await visible(alice, tile(A, 'screen'));
      await visible(bob, `${tile(A, 'screen')}[data-video="true"]`, MEDIA_TIMEOUT_MS);
      await videoPlays(bob, B, tile(A, 'screen'));
      await visible(bob, `${tile(A)} .ic-sharing`);
      await shot(alice, '15-alice-sharing');
      await shot(bob, '16-bob-sees-alice-sharing');
      await alice.click('#btn-screen');
      await gone(bob, tile(A, 'screen'), MEDIA_TIMEOUT_MS);
    });
    await step(`${A}'s socket drops; the client reconnects, stays in the call, media goes on`, async () => {
      await alice.evaluate(() => window.confabApp.client.ws.close());
      await until(alice, 'reconnecting shown', () => document.querySelector('#conn').dataset.state !== 'open');
      await until(alice, 'online again', () => document.querySelector('#conn').dataset.state === 'open');
      await visible(alice, '#call-view');
      await alice.click('#btn-mic'); // unmute: proves the re-joined socket carries the call
      await visible(bob, `${tile(A)}[data-muted="false"]`);
      eq(await bob.getAttribute(tile(A), 'data-status'), 'joined', 'alice still joined on bob');
      await mediaFlows(bob, B, { video: [`${A}/camera`], audio: [`${A}/microphone`] });
      await mediaFlows(alice, A, { video: [`${B}/camera`], audio: [`${B}/microphone`] });
    });
    await step(`${B} leaves; both pages return to the lobby`, async () => {
      await bob.click('#btn-leave');
      await visible(bob, '#lobby-view');
      await visible(alice, '#lobby-view');
    });
    await step('the history panel lists the call as completed on both pages', async () => {
      for (const page of [alice, bob]) {
        const top = await historyTop(page, first, 'completed');
        eq(top.status, 'completed', 'history status');
      }
      assert((await historyTop(alice, first)).text.includes(nameOf(B)), "alice's entry names Bob");
      await until(alice, 'stats line', () => / calls? in 30 days/.test(document.querySelector('#history-stats').textContent));
      await shot(alice, '17-alice-lobby-history');
    });
  });

  await scenario('direct call: declined', async () => {
    let id;
    await step(`${B} calls ${A}; ${A} declines; ${B} returns to the lobby`, async () => {
      await startCall(bob, A);
      id = await callId(bob);
      await until(alice, 'dialog open', () => document.querySelector('#incoming').open);
      eq(await alice.textContent('#incoming-title'), `${nameOf(B)} is calling`, 'dialog title');
      await alice.click('#incoming-decline');
      await until(alice, 'dialog closed', () => !document.querySelector('#incoming').open);
      await visible(bob, '#lobby-view');
      await visible(bob, '.toast');
      assert(new RegExp(`${A} declined`, 'i').test(await bob.textContent('#toasts')), 'a toast says alice declined');
    });
    await step('history shows it rejected', async () => {
      eq((await historyTop(bob, id, 'rejected')).status, 'rejected', "bob's history");
      eq((await historyTop(alice, id, 'rejected')).status, 'rejected', "alice's history");
    });
  });

  await scenario('join by call id, then end for all', async () => {
    let id;
    await step(`${B} is offline when ${A} calls: his tile says invited`, async () => {
      await bob.click('#signout');
      await visible(bob, '#signin-view');
      await startCall(alice, B);
      await visible(alice, `${tile(B)}[data-status="invited"]`);
      id = await callId(alice);
    });
    await step(`${B} signs in again and joins by the call id, with media`, async () => {
      await signIn(bob, origin, nameOf(B));
      await bob.fill('#join-id', id);
      await bob.click('#join-start');
      for (const page of [alice, bob]) {
        await visible(page, `${tile(A)}[data-status="joined"]`);
        await visible(page, `${tile(B)}[data-status="joined"]`);
      }
      await mediaFlows(bob, B, { video: [`${A}/camera`], audio: [`${A}/microphone`] });
    });
    await step(`${A} ends the call for all; both return to the lobby`, async () => {
      await alice.click('#btn-end');
      await visible(alice, '#lobby-view');
      await visible(bob, '#lobby-view');
      eq((await historyTop(bob, id, 'completed')).status, 'completed', "bob's history");
    });
  });

  await scenario('tile grid', async () => {
    for (const n of [12, 50]) {
      await step(`${n} participants fit the grid with names`, async () => {
        // Renders a made-up call through the page's own renderer (layout only, no signaling).
        await alice.evaluate((count) => {
          const app = window.confabApp;
          const names = ['Alice', 'Bob', 'Carol', 'Dan', 'Erin', 'Frank', 'Grace', 'Heidi', 'Ivan', 'Judy'];
          const participants = Array.from({ length: count }, (_, i) => ({
            user_id: i === 0 ? app.state.me.user_id : `user-${i}`,
            name: i === 0 ? app.state.me.name : `${names[i % names.length]} ${i}`,
            status: 'joined', audio_muted: i % 3 === 1, video_enabled: i % 4 !== 2, screen_sharing: false,
          }));
          app.state.call = {
            id: '00000000-0000-4000-8000-000000000000', conversation_id: 'all-hands', kind: 'group', media: 'video',
            initiated_by: app.state.me.user_id, status: 'ongoing', started_at: new Date().toISOString(), participants,
          };
          app.state.speakers = ['user-2', 'user-5'];
          app.state.quality.set('user-3', { score: 2, packet_loss: 0.08, jitter_ms: 30, rtt_ms: 180 });
          app.state.quality.set('user-4', { score: 5, packet_loss: 0, jitter_ms: 2, rtt_ms: 12 });
          app.render();
        }, n);
        await until(alice, `${n} tiles`, (c) => document.querySelectorAll('#grid .tile').length === c, n);
        const box = await alice.evaluate(() => {
          const g = document.querySelector('#grid').getBoundingClientRect();
          const tiles = [...document.querySelectorAll('#grid .tile')].map((t) => t.getBoundingClientRect());
          const inside = tiles.every((t) => t.left >= g.left - 1 && t.right <= g.right + 1 && t.top >= g.top - 1 && t.bottom <= g.bottom + 1);
          return { inside, width: Math.round(tiles[0].width), names: document.querySelectorAll('#grid .tile .name').length };
        });
        assert(box.inside, 'every tile inside the grid (no scrolling)');
        assert(box.width >= 120, `tiles at least 120 px wide (got ${box.width})`);
        eq(box.names, n, 'a name on every tile');
        await shot(alice, `${n === 12 ? 18 : 19}-grid-${n}`);
      });
    }
    await alice.evaluate(() => {
      if (!window.confabApp) return;
      window.confabApp.state.call = null;
      window.confabApp.state.speakers = [];
      window.confabApp.state.quality.clear();
      window.confabApp.render();
    });
  });

  await scenario('media half of confab.js against an in-page stand-in for the SFU', async () => {
    // A unit-level check of CallMedia without the server: a pair of RTCPeerConnections in the
    // page plays the server's part of contract section 7: it answers the publisher's offers and offers
    // the subscriber two tracks of a user "carol". Only CallMedia's signaling is faked.
    let r;
    await step('publisher and subscriber connect, tracks are mapped to carol', async () => {
      r = await alice.evaluate(runMediaLoopback);
      assert(r.ok, r.error || 'loopback failed');
      eq(r.publisherState, 'connected', 'publisher connectionState');
      eq(r.subscriberState, 'connected', 'subscriber connectionState');
      eq(JSON.stringify(r.remote), JSON.stringify(['carol/microphone/audio', 'carol/camera/video']), 'mapped remote tracks');
    });
    await step('video really flows both ways (framesDecoded rising)', async () => {
      assert(r.clientFramesDecoded > 0, `client decoded ${r.clientFramesDecoded} frames of carol's camera`);
      assert(r.serverFramesDecoded > 0, `stand-in decoded ${r.serverFramesDecoded} frames of the published camera`);
      console.log(`            frames decoded: client ${r.clientFramesDecoded}, stand-in ${r.serverFramesDecoded}`);
    });
    await step('publisher offer: mic, camera, then screen with a "screen" msid; sharing does not renegotiate', async () => {
      eq(JSON.stringify(r.offerKinds), JSON.stringify(['audio', 'video', 'video']), 'm-sections');
      eq(r.offersAfterScreen, 1, 'publisher offers after a screen share started');
      eq(r.screenOnSender, 'video', 'the screen track on the third sender');
      assert(/^screen/.test(r.screenMsid), `third m-section msid track id ${r.screenMsid}`);
      assert(!/^screen/.test(r.cameraMsid), `camera msid ${r.cameraMsid}`);
      assert(r.candidatesSent > 0, 'trickled candidates in the contract shape');
    });
  });

  await scenario('page hygiene', async () => {
    await step('no page errors or console errors', async () => {
      assert(pageErrors.length === 0, `errors:\n${pageErrors.join('\n')}`);
    });
    await step('no request left the server origin', async () => {
      assert(foreignRequests.length === 0, `foreign requests:\n${foreignRequests.join('\n')}`);
    });
  });

  await context.close();
}


/** Runs in the page: CallMedia against two local peer connections standing in for the SFU. */
async function runMediaLoopback() {
  const { CallMedia, ClientEvents } = await import('/sdk/confab.js');
  const sleep = (ms) => new Promise((res) => setTimeout(res, ms));
  const callId = '11111111-1111-4111-8111-111111111111';
  const server = { publisher: new RTCPeerConnection(), subscriber: new RTCPeerConnection() };
  const offers = [];
  let candidatesSent = 0;
  let media;
  let remote = [];
  const fakeClient = {
    emit(type, data) {
      if (type === ClientEvents.MEDIA_REMOTE) remote = data.tracks;
    },
    shareScreen: async () => {},
    async request(type, data) {
      if (data.call_id !== callId) throw new Error(`wrong call id in ${type}`);
      if (type === 'rtc:offer') {
        offers.push(data.sdp);
        const pc = server.publisher;
        await pc.setRemoteDescription({ type: 'offer', sdp: data.sdp });
        await pc.setLocalDescription(await pc.createAnswer());
        return { sdp: pc.localDescription.sdp };
      }
      if (type === 'rtc:answer') {
        await server.subscriber.setRemoteDescription({ type: 'answer', sdp: data.sdp });
        return {};
      }
      if (type === 'rtc:candidate') {
        const c = data.candidate;
        if (c) {
          if (!('sdp_mid' in c) || !('sdp_mline_index' in c) || !c.candidate.startsWith('candidate:')) throw new Error('bad candidate shape');
          candidatesSent++;
          await server[data.target].addIceCandidate({ candidate: c.candidate, sdpMid: c.sdp_mid, sdpMLineIndex: c.sdp_mline_index });
        }
        return {};
      }
      throw new Error(`unexpected request ${type}`);
    },
  };
  for (const target of ['publisher', 'subscriber']) {
    server[target].onicecandidate = (ev) =>
      media?.handle('rtc:candidate', {
        call_id: callId,
        target,
        candidate: ev.candidate?.candidate ? { candidate: ev.candidate.candidate, sdp_mid: ev.candidate.sdpMid, sdp_mline_index: ev.candidate.sdpMLineIndex } : null,
      });
  }
  const waitFor = async (what, fn, ms = 10000) => {
    for (const end = Date.now() + ms; Date.now() < end; await sleep(100)) if (await fn()) return;
    throw new Error(`timed out: ${what}`);
  };
  const framesDecoded = async (pc) => {
    let n = 0;
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') n += s.framesDecoded || 0;
    });
    return n;
  };
  try {
    media = new CallMedia(fakeClient, callId, []);
    await media.start({ audio: true, video: true });
    await waitFor('publisher connected', () => media.publisher?.connectionState === 'connected');
    await media.startScreen();
    await sleep(500);
    const offersAfterScreen = offers.length;
    const screenOnSender = media.tx.screen?.sender.track?.kind ?? null;

    // The stand-in forwards "carol": rtc:tracks right before its subscriber offer.
    const src = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    const [audio] = src.getAudioTracks();
    const [video] = src.getVideoTracks();
    const carol = new MediaStream();
    server.subscriber.addTransceiver(audio, { direction: 'sendonly', streams: [carol] });
    server.subscriber.addTransceiver(video, { direction: 'sendonly', streams: [carol] });
    await server.subscriber.setLocalDescription(await server.subscriber.createOffer());
    media.handle('rtc:tracks', {
      call_id: callId,
      tracks: [
        { track_id: audio.id, stream_id: 'carol', user_id: 'carol', kind: 'audio', source: 'microphone', muted: false },
        { track_id: video.id, stream_id: 'carol', user_id: 'carol', kind: 'video', source: 'camera', muted: false },
      ],
    });
    media.handle('rtc:offer', { call_id: callId, target: 'subscriber', sdp: server.subscriber.localDescription.sdp });
    await waitFor('subscriber connected', () => media.subscriber?.connectionState === 'connected');
    await waitFor('remote tracks mapped', () => remote.length === 2);
    await waitFor('client decodes carol', async () => (await framesDecoded(media.subscriber)) > 5);
    await waitFor('stand-in decodes the camera', async () => (await framesDecoded(server.publisher)) > 5);

    const sections = offers[0].split(/\r?\nm=/).slice(1);
    const msidOf = (s) => /a=msid:\S+ (\S+)/.exec(s)?.[1] || '';
    const result = {
      ok: true,
      publisherState: media.publisher.connectionState,
      subscriberState: media.subscriber.connectionState,
      remote: remote.map((t) => `${t.user_id}/${t.source}/${t.kind}`),
      clientFramesDecoded: await framesDecoded(media.subscriber),
      serverFramesDecoded: await framesDecoded(server.publisher),
      offerKinds: sections.map((s) => s.split(' ')[0]),
      offersAfterScreen,
      screenOnSender,
      cameraMsid: msidOf(sections[1]),
      screenMsid: msidOf(sections[2]),
      candidatesSent,
    };
    src.getTracks().forEach((t) => t.stop());
    return result;
  } catch (err) {
    return { ok: false, error: String(err?.stack || err) };
  } finally {
    media?.close();
    server.publisher.close();
    server.subscriber.close();
  }
}

/** The sign-in screen, captured once before anyone signs in. */
async function page0(page, origin, name) {
  await page.goto(origin);
  await visible(page, '#signin-form');
  await page.fill('#signin-name', name);
  await shot(page, '01-signin');
}

// ------------------------------------------------------------------ run

function summary() {
  const passed = results.filter((r) => r.ok).length;
  const failed = results.filter((r) => !r.ok && !r.skipped).length;
  const skipped = results.filter((r) => r.skipped).length;
  console.log(`\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} not run` : ''}`);
  return failed + skipped === 0 && passed > 0;
}

function printServerLog() {
  const log = serverLog();
  if (log) console.log(`\n--- server log (last 6000 characters) ---\n${log.slice(-6000)}`);
}

const watchdog = setTimeout(() => {
  console.log(`\nFAILED: the test did not finish within ${TOTAL_TIMEOUT_MS / 1000} s`);
  results.push({ name: 'overall timeout', ok: false });
  summary();
  printServerLog();
  process.exit(1);
}, TOTAL_TIMEOUT_MS);

let ok = false;
try {
  await main();
  if (!serverAlive()) {
    console.log('\nFAILED: the server is no longer running');
    results.push({ name: 'server alive', ok: false });
  }
  ok = summary();
} catch (err) {
  console.log(`\nFAILED: ${err.stack || err}`);
  results.push({ name: 'test run', ok: false });
  summary();
}
clearTimeout(watchdog);
if (!ok) printServerLog();
console.log(`screenshots: ${ARTIFACTS}`);
process.exit(ok ? 0 : 1);
