// End-to-end test of the demo page in a real headless Chromium, driven by playwright-core.
// Started by run.sh inside a loopback-only network namespace; it starts the server itself.
//
// env: CONFAB_BIN (the confab binary), WORK (a fresh temp dir), ARTIFACTS (screenshot dir)
//
// What it covers needs no working media (the media engine is not running yet): sign-in,
// a direct call that rings, is accepted, muted, re-connected and left; a declined call; a
// call joined by id and ended; the "media unavailable" note; the history panel; the grid at
// 12 and 50 tiles; and page hygiene (no page errors, no request leaving the server's origin).

import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const BIN = required('CONFAB_BIN');
const WORK = required('WORK');
const ARTIFACTS = required('ARTIFACTS');
const TOTAL_TIMEOUT_MS = 240_000;
const STEP_TIMEOUT_MS = 10_000;

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

async function scenario(name, body) {
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

function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

function eq(actual, expected, what) {
  if (actual !== expected) throw new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}

// ------------------------------------------------------------------ server

let server;
let serverLog = '';

function startServer() {
  return new Promise((resolve, reject) => {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CONFAB_')));
    env.CONFAB_LOG = 'warn';
    server = spawn(
      BIN,
      ['serve', '--dev', '--http-addr', '127.0.0.1:0', '--rtc-udp-port', '0',
        '--database-url', `sqlite://${join(WORK, 'confab.db')}`, '--disconnect-grace-s', '15'],
      { env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const timer = setTimeout(() => reject(new Error(`no "listening on" line within 20 s\n${serverLog}`)), 20_000);
    let out = '';
    server.stdout.on('data', (chunk) => {
      out += chunk;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    server.stderr.on('data', (chunk) => (serverLog += chunk));
    server.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited early (${code})\n${serverLog}`));
    });
  });
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
  // --user-data-dir=<fresh temp dir>: passed by launchPersistentContext below.
];

const pageErrors = [];
const foreignRequests = [];

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
async function until(page, what, fn, arg) {
  try {
    await page.waitForFunction(fn, arg, { timeout: STEP_TIMEOUT_MS, polling: 100 });
  } catch {
    throw new Error(`timed out waiting for: ${what}`);
  }
}

const visible = (page, selector) =>
  until(page, `${selector} visible`, (s) => {
    const el = document.querySelector(s);
    return el && !el.closest('[hidden]') && el.getClientRects().length > 0;
  }, selector);

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

async function startCall(page, invitees) {
  await page.fill('#call-invitees', invitees);
  await page.click('#call-start');
  await visible(page, '#call-view');
}

const callId = (page) => page.evaluate(() => window.confabApp.state.call?.id ?? null);

async function historyTop(page, id) {
  await until(page, `history lists call ${id}`, (i) => !!document.querySelector(`#history-list [data-call-id="${i}"]`), id);
  return page.evaluate((i) => {
    const li = document.querySelector(`#history-list [data-call-id="${i}"]`);
    return { status: li.dataset.status, text: li.textContent.replace(/\s+/g, ' ').trim() };
  }, id);
}

// ------------------------------------------------------------------ scenarios

async function main() {
  mkdirSync(ARTIFACTS, { recursive: true });
  const origin = await startServer();
  console.log(`server: ${origin}`);

  await scenario('serving', async () => {
    await step('GET / is the page, no-cache', async () => {
      const res = await fetch(`${origin}/`);
      eq(res.status, 200, 'status');
      assert(res.headers.get('content-type').startsWith('text/html'), `content-type ${res.headers.get('content-type')}`);
      eq(res.headers.get('cache-control'), 'no-cache', 'cache-control');
      assert((await res.text()).includes('<script type="module" src="app.js">'), 'index.html loads app.js');
    });
    await step('files have their content types', async () => {
      for (const [path, type] of [['/confab.js', 'text/javascript'], ['/app.js', 'text/javascript'], ['/style.css', 'text/css'], ['/favicon.svg', 'image/svg+xml']]) {
        const res = await fetch(origin + path);
        eq(res.status, 200, `${path} status`);
        assert(res.headers.get('content-type').startsWith(type), `${path}: ${res.headers.get('content-type')}`);
      }
    });
    await step('unknown paths and the tests stay 404 JSON', async () => {
      for (const path of ['/nope', '/tests/e2e.mjs', '/tests/package.json', '/index.htm']) {
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
  const alice = await openPage(context, 'alice', origin);
  const bob = await openPage(context, 'bob', origin);

  await scenario('sign in', async () => {
    await step('alice signs in with a name', async () => {
      await page0(alice, origin);
      await signIn(alice, origin, 'Alice');
      await until(alice, '#me names alice', () => document.querySelector('#me').textContent.includes('alice'));
      await shot(alice, '02-lobby-empty');
    });
    await step('bob signs in with a name', async () => {
      await signIn(bob, origin, 'Bob');
    });
  });

  let first;
  await scenario('direct call: ring, accept, mute, screen, reconnect, leave', async () => {
    await step('alice calls bob and sees him ringing', async () => {
      await startCall(alice, 'bob');
      await visible(alice, `${tile('bob')}[data-status="ringing"]`);
      await visible(alice, tile('alice'));
      eq(await alice.textContent('#call-status'), 'Ringing…', 'status pill');
      first = await callId(alice);
      assert(first, 'alice has a call id');
      await shot(alice, '03-alice-ringing');
    });
    await step("bob's page shows the incoming-call dialog", async () => {
      await until(bob, 'dialog open', () => document.querySelector('#incoming').open);
      eq(await bob.textContent('#incoming-title'), 'Alice is calling', 'dialog title');
      await shot(bob, '04-bob-incoming');
    });
    await step('bob accepts; both see both tiles with names', async () => {
      await bob.click('#incoming-accept');
      for (const page of [alice, bob]) {
        await visible(page, '#call-view');
        await visible(page, `${tile('alice')}[data-status="joined"]`);
        await visible(page, `${tile('bob')}[data-status="joined"]`);
        await until(page, 'status ongoing', () => document.querySelector('#call-status').textContent === 'ongoing');
      }
      eq(await alice.textContent(`${tile('alice')} .name`), 'Alice (you)', "alice's own tile");
      eq(await alice.textContent(`${tile('bob')} .name`), 'Bob', "bob's tile on alice's page");
      eq(await bob.textContent(`${tile('alice')} .name`), 'Alice', "alice's tile on bob's page");
      assert(!(await bob.evaluate(() => document.querySelector('#incoming').open)), 'dialog closed');
      eq(await bob.evaluate(() => window.confabApp.state.call.id), first, 'same call on both pages');
    });
    await step('both pages note that media is unavailable', async () => {
      for (const page of [alice, bob]) {
        await visible(page, '#media-note');
        const text = await page.textContent('#media-note');
        assert(text.includes('Media unavailable') && text.includes('INVALID_STATE'), `note: ${text}`);
      }
      await shot(alice, '05-alice-in-call');
      await shot(bob, '06-bob-in-call');
    });
    await step("alice mutes; bob's page shows her muted", async () => {
      await alice.click('#btn-mic');
      await visible(bob, `${tile('alice')}[data-muted="true"] .ic-muted`);
      eq(await alice.getAttribute('#btn-mic', 'aria-pressed'), 'true', 'mic button pressed');
      eq(await bob.getAttribute(tile('bob'), 'data-muted'), 'false', 'bob himself unmuted');
    });
    await step("alice turns her camera off; bob's page shows it", async () => {
      await alice.click('#btn-cam');
      await visible(bob, `${tile('alice')} .ic-camoff`);
      await visible(alice, `${tile('alice')}[data-video="false"] .avatar`);
      await shot(bob, '07-bob-sees-alice-muted');
    });
    await step('alice shares her screen; both pages show a screen tile', async () => {
      await alice.click('#btn-screen');
      await visible(alice, tile('alice', 'screen'));
      await visible(bob, tile('alice', 'screen'));
      await visible(bob, `${tile('alice')} .ic-sharing`);
      await shot(alice, '08-alice-sharing');
      await alice.click('#btn-screen');
      await until(bob, 'screen tile gone', (s) => !document.querySelector(s), tile('alice', 'screen'));
    });
    await step("alice's socket drops; the client reconnects and stays in the call", async () => {
      await alice.evaluate(() => window.confabApp.client.ws.close());
      await until(alice, 'reconnecting shown', () => document.querySelector('#conn').dataset.state !== 'open');
      await until(alice, 'online again', () => document.querySelector('#conn').dataset.state === 'open');
      await visible(alice, '#call-view');
      await alice.click('#btn-mic'); // unmute: proves the re-joined socket carries the call
      await visible(bob, `${tile('alice')}[data-muted="false"]`);
      eq(await bob.getAttribute(tile('alice'), 'data-status'), 'joined', 'alice still joined on bob');
    });
    await step('bob leaves; both pages return to the lobby', async () => {
      await bob.click('#btn-leave');
      await visible(bob, '#lobby-view');
      await visible(alice, '#lobby-view');
    });
    await step('the history panel lists the call as completed on both pages', async () => {
      for (const page of [alice, bob]) {
        const top = await historyTop(page, first);
        eq(top.status, 'completed', 'history status');
      }
      assert((await historyTop(alice, first)).text.includes('Bob'), "alice's entry names Bob");
      await until(alice, 'stats line', () => document.querySelector('#history-stats').textContent.includes('1 call'));
      await shot(alice, '09-alice-lobby-history');
    });
  });

  await scenario('direct call: declined', async () => {
    let id;
    await step('bob calls alice; alice declines; bob returns to the lobby', async () => {
      await startCall(bob, 'alice');
      id = await callId(bob);
      await until(alice, 'dialog open', () => document.querySelector('#incoming').open);
      eq(await alice.textContent('#incoming-title'), 'Bob is calling', 'dialog title');
      await alice.click('#incoming-decline');
      await until(alice, 'dialog closed', () => !document.querySelector('#incoming').open);
      await visible(bob, '#lobby-view');
      await visible(bob, '.toast');
      assert(/alice declined/i.test(await bob.textContent('#toasts')), 'a toast says alice declined');
    });
    await step('history shows it rejected', async () => {
      eq((await historyTop(bob, id)).status, 'rejected', "bob's history");
      eq((await historyTop(alice, id)).status, 'rejected', "alice's history");
    });
  });

  await scenario('join by call id, then end for all', async () => {
    let id;
    await step('bob is offline when alice calls: his tile says invited', async () => {
      await bob.click('#signout');
      await visible(bob, '#signin-view');
      await startCall(alice, 'bob');
      await visible(alice, `${tile('bob')}[data-status="invited"]`);
      id = await callId(alice);
    });
    await step('bob signs in again and joins by the call id', async () => {
      await signIn(bob, origin, 'Bob');
      await bob.fill('#join-id', id);
      await bob.click('#join-start');
      for (const page of [alice, bob]) {
        await visible(page, `${tile('alice')}[data-status="joined"]`);
        await visible(page, `${tile('bob')}[data-status="joined"]`);
      }
    });
    await step('alice ends the call for all; both return to the lobby', async () => {
      await alice.click('#btn-end');
      await visible(alice, '#lobby-view');
      await visible(bob, '#lobby-view');
      eq((await historyTop(bob, id)).status, 'completed', "bob's history");
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
        await shot(alice, `1${n === 12 ? 0 : 1}-grid-${n}`);
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
    // The media engine is not running yet, so a pair of RTCPeerConnections in the page plays
    // the server's part of contract section 7: it answers the publisher's offers and offers
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
    await step('publisher offer: mic, camera, then screen with a "screen" msid', async () => {
      eq(JSON.stringify(r.offerKinds), JSON.stringify(['audio', 'video', 'video']), 'm-sections');
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
  const { CallMedia, ClientEvents } = await import('/confab.js');
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
    await waitFor('screen renegotiated', () => offers.length === 2 && server.publisher.signalingState === 'stable');

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

    const sections = offers[1].split(/\r?\nm=/).slice(1);
    const msidOf = (s) => /a=msid:\S+ (\S+)/.exec(s)?.[1] || '';
    const result = {
      ok: true,
      publisherState: media.publisher.connectionState,
      subscriberState: media.subscriber.connectionState,
      remote: remote.map((t) => `${t.user_id}/${t.source}/${t.kind}`),
      clientFramesDecoded: await framesDecoded(media.subscriber),
      serverFramesDecoded: await framesDecoded(server.publisher),
      offerKinds: sections.map((s) => s.split(' ')[0]),
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
async function page0(page, origin) {
  await page.goto(origin);
  await visible(page, '#signin-form');
  await page.fill('#signin-name', 'Alice');
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

function stopServer() {
  if (server && server.exitCode === null) {
    server.removeAllListeners('exit');
    server.kill('SIGTERM');
  }
}

const watchdog = setTimeout(() => {
  console.log(`\nFAILED: the test did not finish within ${TOTAL_TIMEOUT_MS / 1000} s`);
  summary();
  stopServer();
  process.exit(1);
}, TOTAL_TIMEOUT_MS);

let ok = false;
try {
  await main();
  ok = summary();
} catch (err) {
  console.log(`\nFAILED: ${err.stack || err}`);
  results.push({ name: 'test run', ok: false });
  summary();
}
clearTimeout(watchdog);
if (!ok && serverLog) console.log(`\n--- server log ---\n${serverLog.slice(-4000)}`);
stopServer();
console.log(`screenshots: ${ARTIFACTS}`);
process.exit(ok ? 0 : 1);
