// The demo meeting page: sign in, start or join a call, a tile grid, controls, reactions, a
// raised hand and a chat (over call:data), an incoming-call dialog and the call history.
// Everything goes through confab.js; this file only renders.

import { Confab, ClientEvents } from '../sdk/confab.js';

const $ = (id) => document.getElementById(id);
const SESSION_KEY = 'confab.session';
const ACTIVE = new Set(['joined', 'ringing', 'invited']);

const ICONS = {
  mic: '<path d="M12 3a3 3 0 0 0-3 3v6a3 3 0 0 0 6 0V6a3 3 0 0 0-3-3z"/><path d="M19 11a7 7 0 0 1-14 0M12 18v3"/>',
  micOff: '<path d="M3 3l18 18M9 9v3a3 3 0 0 0 5.1 2.1M15 9.3V6a3 3 0 0 0-5.7-1.3"/><path d="M17 16.9A7 7 0 0 1 5 11m14 0a7 7 0 0 1-.1 1.2M12 18v3"/>',
  cam: '<path d="M15 10l5-3v10l-5-3z"/><rect x="3" y="6" width="12" height="12" rx="2"/>',
  camOff: '<path d="M3 3l18 18M15 10l5-3v10l-3.5-2.1M10 6h3a2 2 0 0 1 2 2v3M15 15.5V16a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2V8a2 2 0 0 1 2-2h1"/>',
  screen: '<rect x="3" y="4" width="18" height="12" rx="2"/><path d="M8 20h8M12 16v4"/>',
  leave: '<path d="M15 12H4M8 8l-4 4 4 4"/><path d="M12 4h6a2 2 0 0 1 2 2v12a2 2 0 0 1-2 2h-6"/>',
  hangup: '<path d="M3 14.5c5-4.7 13-4.7 18 0l-2.2 2.6-3.4-1.5v-2.4a10.6 10.6 0 0 0-6.8 0v2.4l-3.4 1.5z"/>',
  in: '<path d="M17 7L7 17M7 9v8h8"/>',
  out: '<path d="M7 17L17 7M9 7h8v8"/>',
  phone: '<path d="M5 4h4l2 5-2.5 1.5a11 11 0 0 0 5 5L15 13l5 2v4a2 2 0 0 1-2 2A16 16 0 0 1 3 6a2 2 0 0 1 2-2"/>',
  pin: '<path d="M9 4h6l-1 6 3 3v2H7v-2l3-3zM12 15v6"/>',
  hand: '<path d="M8 13V5.5a1.5 1.5 0 0 1 3 0V11m0-6.5v-1a1.5 1.5 0 0 1 3 0V11m0-5.5a1.5 1.5 0 0 1 3 0V12m0-3.5a1.5 1.5 0 0 1 3 0V15a6 6 0 0 1-6 6h-1.5a6 6 0 0 1-4.6-2.2L4.5 15a1.6 1.6 0 0 1 2.3-2.2L8 14"/>',
  chat: '<path d="M21 12a8 8 0 0 1-11.6 7.1L4 20l1-4.6A8 8 0 1 1 21 12z"/>',
};

/** The reactions bar; a received reaction outside this list is ignored. */
const REACTIONS = ['👍', '👏', '😂', '🎉', '❤️'];
/** How long a reaction floats over its sender's tile. */
const REACTION_MS = 3000;
const icon = (name) =>
  `<svg class="icon" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true">${ICONS[name]}</svg>`;

/** Everything the page shows, rendered by {@link render}. */
const state = {
  /** @type {{user_id: string, name: string, token: string}|null} */
  me: null,
  /** @type {Confab|null} */
  client: null,
  connection: 'idle',
  /** @type {import('../sdk/confab.js').Call|null} */
  call: null,
  /** call id → `call:incoming` data, newest last */
  incoming: new Map(),
  /** call id → why media is unavailable */
  mediaNotes: new Map(),
  /** @type {{stream: MediaStream|null, screen: MediaStream|null}} */
  local: { stream: null, screen: null },
  /** @type {import('../sdk/confab.js').RemoteTrack[]} */
  remote: [],
  /** user ids, loudest first (`call:active-speakers`) */
  speakers: [],
  /** user id → latest `call:quality` */
  quality: new Map(),
  /** the key (`user_id/source`) of the tile shown large, or null for the plain grid */
  pinned: null,
  history: { calls: [], next: null, stats: null },
  /** call id → `call:ended` data: the history store may lag behind the events for a moment */
  ended: new Map(),
  /** user ids with a raised hand in the current call (`{"kind":"hand"}` over call:data) */
  hands: new Set(),
  /** the current call's chat, oldest first: `{from, text, mine}` */
  chat: [],
  chatOpen: false,
  /** chat messages received while the panel was closed */
  unread: 0,
};

// ------------------------------------------------------------------ session

function slugify(name) {
  return name
    .toLowerCase()
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .replace(/[^a-z0-9._@-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 64);
}

async function signIn(name) {
  const userId = slugify(name);
  if (!userId) throw new Error('Pick a name with at least one letter or digit.');
  const res = await fetch('/api/v1/dev/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user_id: userId, name: name.trim() }),
  });
  const body = await res.json().catch(() => null);
  if (res.status === 404) throw new Error('This server does not run with --dev: no demo sign-in.');
  if (!res.ok) throw new Error(body?.error?.message || `sign-in failed (${res.status})`);
  return { user_id: userId, name: name.trim(), token: body.token };
}

async function startSession(me) {
  state.me = me;
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(me));
  const client = new Confab({ baseUrl: location.origin, token: me.token });
  state.client = client;
  wire(client);
  render();
  try {
    await client.connect();
  } catch {
    // A token from an earlier server run (dev secrets die with the process) is refused.
    const stale = await client.iceServers().then(() => false, (e) => e.code === 'UNAUTHENTICATED');
    if (stale) {
      signOut();
      toast('Your session expired; sign in again.');
      return;
    }
  }
  refreshHistory();
}

function signOut() {
  state.client?.close();
  Object.assign(state, { me: null, client: null, call: null, connection: 'idle' });
  state.incoming.clear();
  sessionStorage.removeItem(SESSION_KEY);
  render();
}

// ------------------------------------------------------------------ client events

/** @param {Confab} client */
function wire(client) {
  client.on(ClientEvents.CONNECTION, ({ state: s }) => {
    state.connection = s;
    renderTopbar();
  });
  client.on(ClientEvents.CALL, ({ call }) => {
    const wasIn = state.call;
    state.call = call;
    if (!call || call.id !== wasIn?.id) {
      state.hands.clear();
      state.chat = [];
      state.unread = 0;
      state.chatOpen = false;
    }
    if (!call) {
      state.speakers = [];
      state.quality.clear();
      state.pinned = null;
      if (wasIn) refreshHistory();
    } else {
      closeIncoming(call.id);
    }
    render();
  });
  client.on(ClientEvents.MEDIA_UNAVAILABLE, ({ call_id, error }) => {
    state.mediaNotes.set(call_id, `${error.code}: ${error.message}`);
    renderCall();
  });
  client.on(ClientEvents.MEDIA_LOCAL, ({ stream, screen }) => {
    state.local = { stream, screen };
    renderCall();
  });
  client.on(ClientEvents.MEDIA_REMOTE, ({ tracks }) => {
    state.remote = tracks;
    renderCall();
  });
  client.on(ClientEvents.CALL_LOST, ({ error }) => toast(`Lost the call: ${error.message}`));
  client.on(ClientEvents.CALL_REJOINED, () => toast('Reconnected to the call.'));

  client.on('call:incoming', (data) => {
    state.incoming.set(data.call_id, data);
    renderIncoming();
  });
  for (const type of ['call:accepted', 'call:rejected', 'call:missed', 'call:ended']) {
    client.on(type, (data) => {
      // Another device of mine answered or declined, or the call is over: stop ringing here.
      // Someone else accepting a group call leaves my invitation open (I may still join).
      if (type === 'call:ended' || data.user_id === state.me?.user_id) closeIncoming(data.call_id);
      if (type === 'call:ended') state.ended.set(data.call_id, data);
      if (type === 'call:ended' && !state.call) refreshHistory();
    });
  }
  client.on('call:rejected', (d) => d.user_id !== state.me?.user_id && toast(`${nameOf(d.user_id)} declined.`));
  client.on('call:busy', (d) => toast(`${nameOf(d.user_id)} is busy in another call.`));
  client.on('call:missed', (d) => {
    toast(d.user_id === state.me?.user_id ? 'You missed a call.' : `${nameOf(d.user_id)} did not answer.`);
    refreshHistory();
  });
  client.on('call:ended', (d) => {
    if (d.ended_by && d.ended_by !== state.me?.user_id) toast(`Call ended by ${nameOf(d.ended_by)} (${d.status}).`);
  });
  client.on('call:participant-left', (d) => {
    if (d.reason === 'disconnected') toast(`${d.name || d.user_id} lost the connection.`);
    if (state.hands.delete(d.user_id)) renderTiles();
  });
  client.on('call:participant-joined', ({ call_id, user_id }) => {
    // A newcomer learns of my raised hand from me: call:data keeps no history.
    if (call_id === state.call?.id && state.hands.has(state.me.user_id)) {
      client.sendData({ kind: 'hand', raised: true }, [user_id]).catch((err) => console.warn('confab: call:data', err.code, err.message));
    }
  });
  client.on('call:data', ({ call_id, from, payload }) => {
    if (call_id === state.call?.id) receiveData(from, payload);
  });
  client.on('call:active-speakers', ({ call_id, user_ids }) => {
    if (call_id !== state.call?.id) return;
    state.speakers = user_ids;
    renderTiles();
  });
  client.on('call:quality', (q) => {
    if (q.call_id !== state.call?.id) return;
    state.quality.set(q.user_id, q);
    renderTiles();
  });
  client.on(ClientEvents.ERROR, (err) => console.warn('confab error', err.code, err.message));
}

function nameOf(userId) {
  const p = state.call?.participants.find((x) => x.user_id === userId);
  return p?.name || userId;
}

// ------------------------------------------------------------------ actions

/** Runs an action; shows its error as a toast instead of throwing. */
async function attempt(action) {
  try {
    return await action();
  } catch (err) {
    toast(err.code ? `${err.code}: ${err.message}` : String(err.message || err), 'error');
    return undefined;
  }
}

function onStartCall(ev) {
  ev.preventDefault();
  const invitees = $('call-invitees').value.split(/[\s,]+/).filter(Boolean);
  const conversationId = $('call-conversation').value.trim() || undefined;
  const media = document.querySelector('input[name=media]:checked').value;
  attempt(async () => {
    await state.client.initiate({ invitees, media, conversationId });
    $('call-invitees').value = '';
  });
}

function onJoin(ev) {
  ev.preventDefault();
  const id = $('join-id').value.trim();
  attempt(async () => {
    await state.client.join(id);
    $('join-id').value = '';
  });
}

function me() {
  return state.call?.participants.find((p) => p.user_id === state.me.user_id);
}

function toggleMic() {
  const p = me();
  if (p) attempt(() => state.client.setMedia({ audioMuted: !p.audio_muted }));
}

function toggleCam() {
  const p = me();
  if (p) attempt(() => state.client.setMedia({ videoEnabled: !p.video_enabled }));
}

function toggleScreen() {
  const p = me();
  if (p) attempt(() => state.client.shareScreen(!p.screen_sharing));
}

// ------------------------------------------------------------------ chat, reactions, hands

// The page's call:data convention: an object with a `kind`. Anything else is ignored.
//   {"kind": "chat", "text": "…"}        a chat message (at most 1000 characters shown)
//   {"kind": "reaction", "emoji": "🎉"}   one of REACTIONS, floated over the sender's tile
//   {"kind": "hand", "raised": true}     the sender's hand, shown as a badge on its tile

function receiveData(from, payload) {
  if (!payload || typeof payload !== 'object') return;
  if (payload.kind === 'chat' && typeof payload.text === 'string' && payload.text.trim()) {
    addChat(from, payload.text.slice(0, 1000), false);
  } else if (payload.kind === 'reaction' && REACTIONS.includes(payload.emoji)) {
    floatReaction(from, payload.emoji);
  } else if (payload.kind === 'hand' && typeof payload.raised === 'boolean') {
    if (payload.raised) state.hands.add(from);
    else state.hands.delete(from);
    renderTiles();
  }
}

function addChat(from, text, mine) {
  state.chat.push({ from, text, mine });
  if (!mine && !state.chatOpen) state.unread += 1;
  renderChat();
  renderChatButton();
}

function sendChat(ev) {
  ev.preventDefault();
  const input = $('chat-input');
  const text = input.value.trim();
  if (!text || !state.call) return;
  attempt(async () => {
    await state.client.sendData({ kind: 'chat', text });
    input.value = '';
    addChat(state.me.user_id, text, true);
  });
}

function react(emoji) {
  if (!state.call) return;
  floatReaction(state.me.user_id, emoji);
  attempt(() => state.client.sendData({ kind: 'reaction', emoji }));
}

function toggleHand() {
  if (!state.call) return;
  const raised = !state.hands.has(state.me.user_id);
  if (raised) state.hands.add(state.me.user_id);
  else state.hands.delete(state.me.user_id);
  renderCall();
  attempt(() => state.client.sendData({ kind: 'hand', raised }));
}

function toggleChat() {
  state.chatOpen = !state.chatOpen;
  if (state.chatOpen) state.unread = 0;
  renderChat();
  renderChatButton();
  if (state.chatOpen) $('chat-input').focus();
}

/** Floats `emoji` up over the user's camera tile for a moment. */
function floatReaction(userId, emoji) {
  const el = tileCache.get(`${userId}/camera`);
  if (!el) return;
  const bubble = document.createElement('span');
  bubble.className = 'reaction';
  bubble.textContent = emoji;
  bubble.style.left = `${30 + Math.random() * 40}%`;
  el.append(bubble);
  setTimeout(() => bubble.remove(), REACTION_MS);
}

function renderChat() {
  const panel = $('chat');
  panel.hidden = !state.chatOpen || !state.call;
  $('call-view').classList.toggle('chat-open', !panel.hidden);
  if (panel.hidden) return;
  const log = $('chat-log');
  log.replaceChildren(
    ...state.chat.map((m) => {
      const li = document.createElement('li');
      li.className = m.mine ? 'chat-msg mine' : 'chat-msg';
      li.dataset.from = m.from;
      const who = document.createElement('span');
      who.className = 'chat-from';
      who.textContent = m.mine ? 'You' : nameOf(m.from);
      const text = document.createElement('span');
      text.className = 'chat-text';
      text.textContent = m.text;
      li.append(who, text);
      return li;
    }),
  );
  $('chat-empty').hidden = state.chat.length > 0;
  log.scrollTop = log.scrollHeight;
}

function renderChatButton() {
  const button = $('btn-chat');
  const badge = state.unread ? `<b class="badge">${state.unread}</b>` : '';
  button.innerHTML = `${icon('chat')}<span>Chat</span>${badge}`;
  button.setAttribute('aria-pressed', String(state.chatOpen));
  button.classList.toggle('ctl-on', state.chatOpen);
  button.title = state.unread ? `Chat (${state.unread} new)` : 'Chat';
}

// ------------------------------------------------------------------ rendering

function render() {
  const signedIn = !!state.me;
  $('signin-view').hidden = signedIn;
  $('lobby-view').hidden = !signedIn || !!state.call;
  $('call-view').hidden = !signedIn || !state.call;
  renderTopbar();
  renderCall();
  renderIncoming();
  renderHistory();
}

function renderTopbar() {
  const labels = { idle: 'Offline', connecting: 'Connecting…', open: 'Online', reconnecting: 'Reconnecting…', closed: 'Offline' };
  const conn = $('conn');
  conn.dataset.state = state.connection;
  conn.querySelector('span').textContent = labels[state.connection] || state.connection;
  conn.hidden = !state.me;
  $('me').hidden = $('signout').hidden = !state.me;
  if (state.me) $('me').innerHTML = `${esc(state.me.name)} <code>${esc(state.me.user_id)}</code>`;
}

function renderCall() {
  const call = state.call;
  if (!call) {
    $('grid').replaceChildren();
    tileCache.clear();
    renderChat();
    return;
  }
  const others = call.participants.filter((p) => p.user_id !== state.me.user_id);
  const title =
    call.kind === 'direct'
      ? `Call with ${others.map((p) => p.name).join(', ')}`
      : `${call.conversation_id} · group call`;
  $('call-title').textContent = title;
  const status = $('call-status');
  status.textContent = call.status === 'ringing' ? 'Ringing…' : call.status;
  status.dataset.status = call.status;

  const note = state.mediaNotes.get(call.id);
  $('media-note').hidden = !note;
  $('media-note').innerHTML = note
    ? `<strong>Media unavailable.</strong> The server refused audio and video for this call (${esc(note)}). Calling, muting and the participant list still work.`
    : '';

  const self = me();
  setControl($('btn-mic'), self?.audio_muted ? 'micOff' : 'mic', self?.audio_muted ? 'Unmute' : 'Mute', !!self?.audio_muted);
  setControl($('btn-cam'), self?.video_enabled ? 'cam' : 'camOff', self?.video_enabled ? 'Stop video' : 'Start video', !self?.video_enabled);
  $('btn-cam').disabled = call.media !== 'video';
  setControl($('btn-screen'), 'screen', self?.screen_sharing ? 'Stop sharing' : 'Share screen', !!self?.screen_sharing);
  $('btn-screen').classList.toggle('ctl-on', !!self?.screen_sharing);
  const handUp = state.hands.has(state.me.user_id);
  setControl($('btn-hand'), 'hand', handUp ? 'Lower hand' : 'Raise hand', handUp);
  $('btn-hand').classList.remove('ctl-off');
  $('btn-hand').classList.toggle('ctl-on', handUp);
  renderChatButton();
  renderChat();
  setControl($('btn-leave'), 'leave', 'Leave', false);
  const mayEnd = call.kind === 'direct' || call.initiated_by === state.me.user_id;
  setControl($('btn-end'), 'hangup', 'End for all', false);
  $('btn-end').hidden = !mayEnd;
  renderTiles();
  tick();
}

function setControl(button, iconName, label, pressed) {
  button.innerHTML = `${icon(iconName)}<span>${label}</span>`;
  button.setAttribute('aria-pressed', String(pressed));
  button.classList.toggle('ctl-off', pressed && button.id !== 'btn-screen');
  button.title = label;
}

/** Tiles are kept across renders so their video elements do not restart. */
const tileCache = new Map();

function renderTiles() {
  const call = state.call;
  if (!call) return;
  const myId = state.me.user_id;
  const people = call.participants
    .filter((p) => ACTIVE.has(p.status) || p.status === 'busy')
    .sort((a, b) => (a.user_id === myId ? -1 : b.user_id === myId ? 1 : 0));
  const byUser = new Map();
  for (const t of state.remote) {
    if (!byUser.has(t.user_id)) byUser.set(t.user_id, {});
    byUser.get(t.user_id)[t.source] = t;
  }

  const tiles = [];
  for (const p of people) {
    const mine = p.user_id === myId;
    const r = byUser.get(p.user_id) || {};
    const stream = mine ? state.local.stream : streamOf(r.camera?.track, r.microphone?.track);
    // What the participant announced (call:media-changed) or what the server forwards
    // (rtc:tracks `muted`): either one is enough to show the microphone or camera as off.
    const audioMuted = !!p.audio_muted || !!r.microphone?.muted;
    const videoOff = !p.video_enabled || !!r.camera?.muted;
    tiles.push({ key: `${p.user_id}/camera`, p, source: 'camera', mine, stream, audioMuted, videoOff });
    // The server keeps a stopped share's track and marks it muted (rtc:tracks): no tile then.
    const screen = mine ? state.local.screen : r.screen && !r.screen.muted ? streamOf(r.screen.track) : null;
    if (screen || (p.screen_sharing && p.status === 'joined')) {
      tiles.push({ key: `${p.user_id}/screen`, p, source: 'screen', mine, stream: screen });
    }
  }

  if (state.pinned && !tiles.some((t) => t.key === state.pinned)) state.pinned = null;
  const pinnedAt = tiles.findIndex((t) => t.key === state.pinned);
  if (pinnedAt > 0) tiles.unshift(...tiles.splice(pinnedAt, 1));

  const grid = $('grid');
  grid.classList.toggle('pinned', !!state.pinned);
  const keep = new Set(tiles.map((t) => t.key));
  for (const [key, el] of tileCache) {
    if (!keep.has(key)) {
      tileVisibility.unobserve(el);
      onScreen.delete(el);
      el.remove();
      tileCache.delete(key);
    }
  }
  tiles.forEach((t, i) => {
    let el = tileCache.get(t.key);
    if (!el) {
      el = createTile(t.key);
      tileCache.set(t.key, el);
      tileVisibility.observe(el);
    }
    updateTile(el, t);
    if (grid.children[i] !== el) grid.insertBefore(el, grid.children[i] || null);
  });
  layoutGrid();
}

/** Shows one tile large, or (the same key again, or null) goes back to the grid. */
function togglePin(key) {
  state.pinned = state.pinned === key ? null : key;
  renderTiles();
}

/**
 * Tiles scrolled out of the grid's box. A tile not yet reported counts as on screen, so a new
 * tile starts with video rather than waiting for the observer.
 */
const onScreen = new Map();
const tileVisibility = new IntersectionObserver(
  (entries) => {
    for (const e of entries) onScreen.set(e.target, e.isIntersecting);
    chooseLayers();
  },
  { root: document.getElementById('grid') },
);

/**
 * The simulcast layer each remote video should arrive in (`rtc:subscribe`): nothing for a tile
 * out of sight; the top layer for the pinned tile, for screen shares and, in the plain grid,
 * for the active speaker; otherwise the smallest layer that fills the tile without being
 * stretched more than 1.5 times (the camera's layers are 240, 480 and 960 pixels wide, see
 * confab.js). A big meeting's grid of small tiles thus takes the low layer.
 */
function layerFor(el) {
  if (onScreen.get(el) === false) return 'off';
  const { user, source, key } = el.dataset;
  if (key === state.pinned || source === 'screen') return 'high';
  if (!state.pinned && state.speakers[0] === user) return 'high';
  const pixels = el.clientWidth * (window.devicePixelRatio || 1);
  return pixels <= 360 ? 'low' : pixels <= 720 ? 'medium' : 'high';
}

/** Sends each remote video's layer when it changes (confab.js drops repeats). */
function chooseLayers() {
  const client = state.client;
  if (!client?.media || !state.call) return;
  for (const el of tileCache.values()) {
    if (el.classList.contains('mine') || el.dataset.status !== 'joined') continue;
    const layer = layerFor(el);
    el.dataset.layer = layer;
    client.setQuality(el.dataset.user, el.dataset.source, layer).catch((err) => console.warn('confab: rtc:subscribe', err.code, err.message));
  }
}

const streamCache = new Map();
/** One MediaStream per set of tracks, so a video element keeps playing across renders. */
function streamOf(...tracks) {
  const list = tracks.filter(Boolean);
  if (!list.length) return null;
  const key = list.map((t) => t.id).join('|');
  if (!streamCache.has(key)) streamCache.set(key, new MediaStream(list));
  return streamCache.get(key);
}

function createTile(key) {
  const el = document.createElement('div');
  el.className = 'tile';
  el.dataset.key = key;
  el.innerHTML = `
    <video autoplay playsinline></video>
    <button class="pin" type="button" title="Pin" aria-pressed="false">${icon('pin')}</button>
    <div class="avatar"><span></span></div>
    <div class="tile-state"></div>
    <div class="quality" title="Connection quality"><i></i><i></i><i></i><i></i><i></i></div>
    <div class="hand" title="Hand raised" hidden>${icon('hand')}</div>
    <div class="label"><span class="label-icons"></span><span class="name"></span></div>`;
  el.querySelector('.pin').addEventListener('click', () => togglePin(key));
  return el;
}

function updateTile(el, { p, source, mine, stream, audioMuted = !!p.audio_muted, videoOff = !p.video_enabled }) {
  const screen = source === 'screen';
  el.dataset.user = p.user_id;
  el.dataset.source = source;
  el.dataset.status = p.status;
  el.dataset.muted = String(audioMuted);
  el.dataset.video = String(screen ? !!stream : !videoOff && !!stream?.getVideoTracks().length);
  el.dataset.screen = String(!!p.screen_sharing);
  el.classList.toggle('speaking', !screen && state.speakers[0] === p.user_id);
  el.classList.toggle('speaker', !screen && state.speakers.includes(p.user_id));
  el.classList.toggle('mine', mine);
  const pinned = el.dataset.key === state.pinned;
  el.classList.toggle('pinned', pinned);
  const pin = el.querySelector('.pin');
  pin.setAttribute('aria-pressed', String(pinned));
  pin.title = pinned ? 'Unpin' : 'Pin';

  const video = el.querySelector('video');
  video.muted = mine; // never play one's own microphone back
  if (video.srcObject !== stream) video.srcObject = stream;
  if (stream) video.play().catch(() => {});

  const hand = !screen && state.hands.has(p.user_id);
  el.dataset.hand = String(hand);
  el.querySelector('.hand').hidden = !hand;

  el.querySelector('.avatar span').textContent = screen ? '' : initials(p.name || p.user_id);
  el.querySelector('.avatar').classList.toggle('avatar-screen', screen);
  if (screen && !stream) el.querySelector('.avatar').innerHTML = `${icon('screen')}<span></span>`;
  const waiting = { ringing: 'Ringing…', invited: 'Invited (offline)', busy: 'Busy' }[p.status] || '';
  el.querySelector('.tile-state').textContent = screen && !stream ? 'Screen share' : waiting;

  const name = screen ? `${p.name}'s screen` : p.name + (mine ? ' (you)' : '');
  el.querySelector('.name').textContent = name;
  el.querySelector('.label-icons').innerHTML = screen
    ? icon('screen')
    : (audioMuted ? `<span class="ic-muted" title="Muted">${icon('micOff')}</span>` : '') +
      (videoOff && state.call.media === 'video' ? `<span class="ic-camoff" title="Camera off">${icon('camOff')}</span>` : '') +
      (p.screen_sharing ? `<span class="ic-sharing" title="Sharing the screen">${icon('screen')}</span>` : '');

  const q = screen ? null : state.quality.get(p.user_id);
  const quality = el.querySelector('.quality');
  quality.hidden = !q;
  if (q) {
    el.dataset.quality = String(q.score);
    quality.title = `Quality ${q.score}/5 · loss ${(q.packet_loss * 100).toFixed(1)}% · jitter ${Math.round(q.jitter_ms)} ms · rtt ${Math.round(q.rtt_ms)} ms`;
    quality.querySelectorAll('i').forEach((bar, i) => bar.classList.toggle('on', i < q.score));
  } else {
    delete el.dataset.quality;
  }
}

/** Below this width a tile says nothing; the grid scrolls instead, and tiles out of sight pause. */
const MIN_TILE_W = 120;

/**
 * Picks the column count that gives the largest 16:9 tiles in the grid's box, no smaller than
 * {@link MIN_TILE_W}. A pinned tile has its own layout (style.css).
 */
function layoutGrid() {
  const grid = $('grid');
  const n = grid.children.length || 1;
  const { width, height } = grid.getBoundingClientRect();
  if (!width || !height || grid.classList.contains('pinned')) {
    chooseLayers();
    return;
  }
  const gap = 10;
  let best = { cols: 1, w: 0 };
  for (let cols = 1; cols <= n; cols++) {
    const rows = Math.ceil(n / cols);
    const w = Math.min((width - gap * (cols - 1)) / cols, ((height - gap * (rows - 1)) / rows) * (16 / 9));
    if (w > best.w) best = { cols, w };
  }
  if (best.w < MIN_TILE_W) {
    const cols = Math.max(1, Math.floor((width + gap) / (MIN_TILE_W + gap)));
    best = { cols, w: Math.min(width, (width - gap * (cols - 1)) / cols) };
  }
  grid.style.setProperty('--cols', String(best.cols));
  grid.style.setProperty('--half-cols', String(best.cols * 2));
  grid.style.setProperty('--tile-w', `${Math.floor(best.w)}px`);
  // Centre a short last row: its first tile starts half a tile further per missing tile.
  const rest = n % best.cols;
  [...grid.children].forEach((el, i) => {
    el.style.gridColumn = rest && i === n - rest ? `${best.cols - rest + 1} / span 2` : '';
  });
  grid.dataset.count = String(n);
  chooseLayers();
}

function tick() {
  const call = state.call;
  const timer = $('call-timer');
  if (!call?.started_at) {
    timer.textContent = '';
    return;
  }
  timer.textContent = formatDuration((Date.now() - Date.parse(call.started_at)) / 1000);
}

function renderIncoming() {
  const dialog = $('incoming');
  const latest = [...state.incoming.values()].pop();
  if (!latest || !state.me) {
    if (dialog.open) dialog.close();
    return;
  }
  const caller = latest.caller.name || latest.caller.user_id;
  dialog.dataset.callId = latest.call_id;
  $('incoming-avatar').textContent = initials(caller);
  $('incoming-title').textContent = `${caller} is calling`;
  $('incoming-sub').textContent =
    `${latest.media === 'video' ? 'Video' : 'Audio'} call` +
    (latest.kind === 'group' ? ` in ${latest.conversation_id}` : '') +
    ` · ${latest.caller.user_id}`;
  $('incoming-accept').textContent = latest.kind === 'group' ? 'Join' : 'Accept';
  if (!dialog.open) dialog.showModal();
}

function closeIncoming(callId) {
  if (state.incoming.delete(callId)) renderIncoming();
}

function answerIncoming(accept) {
  const callId = $('incoming').dataset.callId;
  closeIncoming(callId);
  attempt(() => (accept ? state.client.accept(callId) : state.client.reject(callId)));
}

// ------------------------------------------------------------------ history

async function refreshHistory(more = false, retry = 0) {
  const client = state.client;
  if (!client) return;
  try {
    const [page, stats] = await Promise.all([
      client.history({ limit: 20, before: more ? state.history.next : undefined }),
      more ? Promise.resolve(state.history.stats) : client.stats({ timeframe: '30d' }),
    ]);
    // A call that just ended may still read as live: show what the events said, look again.
    let stale = false;
    const calls = page.calls.map((c) => {
      const ended = state.ended.get(c.id);
      if (!ended || (c.status !== 'ringing' && c.status !== 'ongoing')) return c;
      stale = true;
      return { ...c, status: ended.status, duration_s: ended.duration_s, end_reason: ended.reason };
    });
    if (stale && retry < 5) setTimeout(() => refreshHistory(false, retry + 1), 500);
    state.history = {
      calls: more ? [...state.history.calls, ...calls] : calls,
      next: page.next_cursor,
      stats,
    };
  } catch (err) {
    console.warn('history', err);
  }
  renderHistory();
}

function renderHistory() {
  const { calls, next, stats } = state.history;
  const list = $('history-list');
  const myId = state.me?.user_id;
  list.replaceChildren(
    ...calls.map((c) => {
      const li = document.createElement('li');
      li.className = 'history-item';
      li.dataset.callId = c.id;
      li.dataset.status = c.status;
      const others = c.participants.filter((p) => p.user_id !== myId);
      const who = c.kind === 'group' ? c.conversation_id : others.map((p) => p.name).join(', ');
      const when = new Date(c.created_at);
      const missed = c.status === 'missed' && c.direction === 'incoming';
      li.innerHTML = `
        <span class="dir ${c.direction}${missed ? ' missed' : ''}" title="${c.direction}">${icon(c.direction === 'incoming' ? 'in' : 'out')}</span>
        <span class="who"><strong>${esc(who)}</strong><small>${c.media} · ${formatWhen(when)}</small></span>
        <span class="badge" data-status="${c.status}">${c.status}</span>
        <span class="dur">${c.started_at && c.ended_at ? formatDuration(c.duration_s) : ''}</span>`;
      if (c.kind === 'direct' && others.length === 1) {
        const again = document.createElement('button');
        again.type = 'button';
        again.className = 'btn btn-ghost btn-icon';
        again.title = `Call ${others[0].name}`;
        again.innerHTML = icon('phone');
        again.addEventListener('click', () =>
          attempt(() => state.client.initiate({ invitees: [others[0].user_id], media: c.media })),
        );
        li.append(again);
      }
      return li;
    }),
  );
  $('history-empty').hidden = calls.length > 0;
  $('history-more').hidden = !next;
  $('history-stats').textContent = stats?.total
    ? `${stats.total} call${stats.total === 1 ? '' : 's'} in 30 days · ${stats.by_status.completed || 0} completed · ` +
      `${formatDuration(stats.total_duration_s)} talked`
    : '';
}

// ------------------------------------------------------------------ small helpers

function initials(name) {
  const parts = String(name).trim().split(/[\s._-]+/).filter(Boolean);
  return ((parts[0]?.[0] || '?') + (parts[1]?.[0] || '')).toUpperCase();
}

function formatDuration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

function formatWhen(date) {
  const time = date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const today = new Date().toDateString() === date.toDateString();
  return today ? `today ${time}` : `${date.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${time}`;
}

function esc(s) {
  return String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function toast(text, kind = 'info') {
  const el = document.createElement('div');
  el.className = `toast toast-${kind}`;
  el.textContent = text;
  $('toasts').append(el);
  setTimeout(() => el.classList.add('toast-out'), 4000);
  setTimeout(() => el.remove(), 4400);
}

// ------------------------------------------------------------------ start

function init() {
  $('signin-name').addEventListener('input', (ev) => {
    $('signin-id').textContent = slugify(ev.target.value) || '—';
  });
  $('signin-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const error = $('signin-error');
    error.hidden = true;
    try {
      await startSession(await signIn($('signin-name').value));
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    }
  });
  $('signout').addEventListener('click', signOut);
  $('call-form').addEventListener('submit', onStartCall);
  $('join-form').addEventListener('submit', onJoin);
  $('history-refresh').addEventListener('click', () => refreshHistory());
  $('history-more').addEventListener('click', () => refreshHistory(true));
  $('btn-mic').addEventListener('click', toggleMic);
  $('btn-cam').addEventListener('click', toggleCam);
  $('btn-screen').addEventListener('click', toggleScreen);
  $('btn-hand').addEventListener('click', toggleHand);
  $('btn-chat').addEventListener('click', toggleChat);
  $('chat-form').addEventListener('submit', sendChat);
  $('reactions').replaceChildren(
    ...REACTIONS.map((emoji) => {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'reaction-btn';
      b.dataset.emoji = emoji;
      b.title = `React ${emoji}`;
      b.textContent = emoji;
      b.addEventListener('click', () => react(emoji));
      return b;
    }),
  );
  $('btn-leave').addEventListener('click', () => attempt(() => state.client.leave()));
  $('btn-end').addEventListener('click', () => attempt(() => state.client.end()));
  $('call-copy').addEventListener('click', () => {
    navigator.clipboard?.writeText(state.call?.id || '').then(
      () => toast('Call id copied.'),
      () => toast(`Call id: ${state.call?.id}`),
    );
  });
  $('incoming-accept').addEventListener('click', () => answerIncoming(true));
  $('incoming-decline').addEventListener('click', () => answerIncoming(false));
  $('incoming').addEventListener('cancel', (ev) => ev.preventDefault()); // Esc does not hide a ringing call
  new ResizeObserver(layoutGrid).observe($('grid'));
  setInterval(tick, 1000);

  const saved = sessionStorage.getItem(SESSION_KEY);
  if (saved) {
    try {
      startSession(JSON.parse(saved));
      return;
    } catch {
      sessionStorage.removeItem(SESSION_KEY);
    }
  }
  render();
}

// For debugging from the console (and the end-to-end tests): the page's state and renderer.
window.confabApp = { state, render, get client() { return state.client; } };

// Read-only view of the current call's media, for the console and the end-to-end tests:
// the two peer connections (for getStats), the latest `rtc:tracks` list and the received tracks.
window.confabDebug = Object.freeze({
  /** @returns {RTCPeerConnection|null} */
  get publisher() {
    return state.client?.media?.publisher ?? null;
  },
  /** @returns {RTCPeerConnection|null} */
  get subscriber() {
    return state.client?.media?.subscriber ?? null;
  },
  /** a copy of the latest `rtc:tracks` list */
  get trackInfo() {
    return (state.client?.media?.trackInfo ?? []).map((t) => ({ ...t }));
  },
  /** the received tracks as the page shows them, with their MediaStreamTrack state */
  get remote() {
    return state.remote.map(({ track, ...t }) => ({ ...t, ready_state: track?.readyState ?? null }));
  },
});

init();
