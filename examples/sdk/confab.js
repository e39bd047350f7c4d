// confab.js: a small, dependency-free browser client for Confab (wire contract v2).
//
//   import { Confab } from './confab.js';
//   const client = new Confab({ baseUrl: location.origin, token });
//   client.on('call:incoming', (e) => …);
//   await client.connect();
//   const { call } = await client.initiate({ invitees: ['bob'], media: 'video' });
//
// Signaling: one WebSocket (`/ws?token=`), requests correlated with their `ack`/`error` by
// `id`, reconnect with exponential backoff and jitter, and a re-join of the current call when
// the socket comes back within the disconnect grace. Media (contract section 7): a publisher
// RTCPeerConnection (the client offers its sendonly microphone, camera and screen tracks) and a
// subscriber RTCPeerConnection (the server offers, the client answers), with trickle ICE.

/**
 * @typedef {'audio'|'video'} MediaKind
 * @typedef {'microphone'|'camera'|'screen'} Source
 *
 * @typedef {object} Participant
 * @property {string} user_id
 * @property {string} name
 * @property {'invited'|'ringing'|'joined'|'left'|'declined'|'missed'|'busy'} status
 * @property {string|null} joined_at
 * @property {string|null} left_at
 * @property {boolean} audio_muted
 * @property {boolean} video_enabled
 * @property {boolean} screen_sharing
 *
 * @typedef {object} Call
 * @property {string} id
 * @property {string|null} conversation_id
 * @property {'direct'|'group'} kind
 * @property {MediaKind} media
 * @property {string} initiated_by
 * @property {'ringing'|'ongoing'|'completed'|'missed'|'rejected'|'cancelled'|'busy'|'failed'} status
 * @property {string} created_at
 * @property {string|null} started_at
 * @property {string|null} ended_at
 * @property {number} duration_s
 * @property {string|null} end_reason
 * @property {Participant[]} participants
 * @property {'incoming'|'outgoing'} [direction] only in history listings
 *
 * @typedef {object} IceServer
 * @property {string[]} urls
 * @property {string} [username]
 * @property {string} [credential]
 *
 * @typedef {object} RemoteTrackInfo  one entry of `rtc:tracks`
 * @property {string} track_id
 * @property {string} stream_id
 * @property {string} user_id
 * @property {MediaKind} kind
 * @property {Source} source
 * @property {boolean} muted
 *
 * @typedef {object} RemoteTrack  a received track, mapped to its publisher
 * @property {string} user_id
 * @property {Source} source
 * @property {MediaKind} kind
 * @property {boolean} muted
 * @property {string} track_id
 * @property {MediaStreamTrack} track
 *
 * @typedef {object} ConfabOptions
 * @property {string} [baseUrl]  server origin, e.g. `http://127.0.0.1:8080` (default: the page's)
 * @property {string} token  the user's JWT
 * @property {number} [requestTimeoutMs=10000]  how long a request waits for its ack
 * @property {number} [reconnectMinMs=500]  first reconnect delay
 * @property {number} [reconnectMaxMs=15000]  cap of the reconnect delay
 * @property {number} [rejoinGraceMs=15000]  re-join the current call if back within this
 *   (the server's `disconnect_grace_s`; after it the seat is gone)
 */

/** The contract's error shape; also used for client-side failures (`TIMEOUT`, `DISCONNECTED`). */
export class ConfabError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {object} [details]
   */
  constructor(code, message, details) {
    super(message);
    this.name = 'ConfabError';
    /** @type {string} */
    this.code = code;
    /** @type {object|undefined} */
    this.details = details;
  }

  /** @param {{code?: string, message?: string, details?: object}} data */
  static from(data) {
    return new ConfabError(data?.code || 'INTERNAL', data?.message || 'unknown error', data?.details);
  }
}

/** A minimal event emitter. `on` returns a function that removes the listener. */
export class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
  }

  /**
   * @param {string} type  an event type, or `*` for every event (called with `(type, data)`)
   * @param {Function} fn
   * @returns {() => void}
   */
  on(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
    return () => this.off(type, fn);
  }

  /** @param {string} type @param {Function} fn */
  off(type, fn) {
    this._listeners.get(type)?.delete(fn);
  }

  /** @param {string} type @param {Function} fn @returns {() => void} */
  once(type, fn) {
    const off = this.on(type, (...args) => {
      off();
      fn(...args);
    });
    return off;
  }

  /** @param {string} type @param {*} [data] */
  emit(type, data) {
    for (const fn of [...(this._listeners.get(type) || [])]) safely(() => fn(data));
    for (const fn of [...(this._listeners.get('*') || [])]) safely(() => fn(type, data));
  }
}

function safely(fn) {
  try {
    fn();
  } catch (err) {
    console.error('confab: listener failed', err);
  }
}

const CLIENT_EVENTS = Object.freeze({
  /** `{state: 'connecting'|'open'|'reconnecting'|'closed', attempt?, delay_ms?}` */
  CONNECTION: 'connection',
  /** `{call: Call|null}`: the call this client is joined in changed (or ended: `null`) */
  CALL: 'call',
  /** `{call_id, error: ConfabError}`: the server refused media for this call */
  MEDIA_UNAVAILABLE: 'media:unavailable',
  /** `{call_id, stream: MediaStream|null, screen: MediaStream|null}` */
  MEDIA_LOCAL: 'media:local',
  /** `{call_id, tracks: RemoteTrack[]}`: every received track, after each change */
  MEDIA_REMOTE: 'media:remote',
  /** `{call_id, target, state}`: a peer connection's connectionState changed */
  MEDIA_STATE: 'media:state',
  /** `{call_id, error: ConfabError}`: the socket came back too late or the re-join failed */
  CALL_LOST: 'call:lost',
  /** `{call_id}`: re-joined after a reconnect */
  CALL_REJOINED: 'call:rejoined',
  /** ConfabError: an `error` message that answers no pending request */
  ERROR: 'error',
});
export { CLIENT_EVENTS as ClientEvents };

/** Call statuses after which nothing changes any more. */
const FINAL_STATUSES = new Set(['completed', 'missed', 'rejected', 'cancelled', 'busy', 'failed']);

export class Confab extends Emitter {
  /** @param {ConfabOptions} options */
  constructor(options) {
    super();
    if (!options?.token) throw new TypeError('Confab: a token is required');
    const base = options.baseUrl || globalThis.location?.origin;
    this.baseUrl = String(base).replace(/\/+$/, '');
    this.token = options.token;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10000;
    this.reconnectMinMs = options.reconnectMinMs ?? 500;
    this.reconnectMaxMs = options.reconnectMaxMs ?? 15000;
    this.rejoinGraceMs = options.rejoinGraceMs ?? 15000;

    /** @type {'idle'|'connecting'|'open'|'reconnecting'|'closed'} */
    this.state = 'idle';
    /** @type {WebSocket|null} */
    this.ws = null;
    /** @type {Call|null} the call this client is joined in */
    this.call = null;
    /** @type {CallMedia|null} */
    this.media = null;
    /** @type {{audio: boolean, video: boolean}} what to capture when a call starts */
    this.capture = { audio: true, video: true };

    this._seq = 0;
    /** @type {Map<string, {resolve: Function, reject: Function, timer: number, type: string}>} */
    this._pending = new Map();
    this._attempt = 0;
    this._reconnectTimer = 0;
    this._disconnectedAt = 0;
    this._closedByUser = false;
    /** @type {Promise<void>|null} */
    this._firstOpen = null;
    /** @type {{type: string, data: object}[]} `rtc:*` messages that arrived before their call's media */
    this._early = [];
  }

  // ---------------------------------------------------------------- connection

  /** Opens the socket; resolves once it is open (rejects if the first attempt fails). */
  connect() {
    if (this._firstOpen) return this._firstOpen;
    this._closedByUser = false;
    this._firstOpen = new Promise((resolve, reject) => this._open(resolve, reject));
    return this._firstOpen;
  }

  /** Closes the socket for good (no reconnect) and drops media. Does not leave the call. */
  close() {
    this._closedByUser = true;
    clearTimeout(this._reconnectTimer);
    this._stopMedia();
    this._failPending('DISCONNECTED', 'the client was closed');
    if (this.ws) this.ws.close(1000, 'bye');
    this.ws = null;
    this._firstOpen = null;
    this._setState('closed');
  }

  /** @returns {boolean} */
  get connected() {
    return this.state === 'open';
  }

  _wsUrl() {
    const url = new URL('/ws', this.baseUrl);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    url.searchParams.set('token', this.token);
    return url.toString();
  }

  _open(resolve, reject) {
    this._setState(this._attempt === 0 ? 'connecting' : 'reconnecting', { attempt: this._attempt });
    const ws = new WebSocket(this._wsUrl());
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      const wasDown = this._attempt > 0 || this._disconnectedAt > 0;
      this._attempt = 0;
      this._setState('open');
      resolve?.();
      if (wasDown) this._afterReconnect();
    };
    ws.onmessage = (ev) => this._onMessage(ev.data);
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this._failPending('DISCONNECTED', `the connection closed (${ev.code})`);
      if (this._closedByUser) return;
      if (!opened && resolve && this._attempt === 0 && !this._disconnectedAt) {
        // The very first attempt failed (bad token, server down): report it, keep trying.
        reject?.(new ConfabError('DISCONNECTED', 'could not connect to the server'));
      }
      if (!this._disconnectedAt) this._disconnectedAt = Date.now();
      this._scheduleReconnect();
    };
  }

  _scheduleReconnect() {
    // Exponential backoff with "equal jitter": half the delay is fixed, half is random, so
    // many clients dropped at once do not come back in lockstep.
    const ceiling = Math.min(this.reconnectMaxMs, this.reconnectMinMs * 2 ** this._attempt);
    const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
    this._attempt += 1;
    this._setState('reconnecting', { attempt: this._attempt, delay_ms: delay });
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = setTimeout(() => this._open(null, null), delay);
  }

  async _afterReconnect() {
    const downFor = Date.now() - this._disconnectedAt;
    this._disconnectedAt = 0;
    const call = this.call;
    if (!call) return;
    if (downFor > this.rejoinGraceMs) {
      this._loseCall(call.id, new ConfabError('DISCONNECTED', 'disconnected longer than the grace'));
      return;
    }
    try {
      // Joining a call one is still joined in is a no-op on the server: safe to repeat.
      const res = await this.request('call:join', { call_id: call.id });
      this._adoptCall(res.call, res.ice_servers);
      this.emit(CLIENT_EVENTS.CALL_REJOINED, { call_id: call.id });
      if (this.media && !this.media.healthy()) this.media.restart();
    } catch (err) {
      this._loseCall(call.id, err);
    }
  }

  _loseCall(callId, error) {
    this.emit(CLIENT_EVENTS.CALL_LOST, { call_id: callId, error });
    this._setCall(null);
  }

  _setState(state, extra = {}) {
    this.state = state;
    this.emit(CLIENT_EVENTS.CONNECTION, { state, ...extra });
  }

  // ---------------------------------------------------------------- requests

  /**
   * Sends one request and resolves with its `ack` data, or rejects with a ConfabError
   * (the server's `{code, message, details}`, or `TIMEOUT` / `DISCONNECTED`).
   * @param {string} type
   * @param {object} [data]
   * @param {{timeoutMs?: number}} [opts]
   * @returns {Promise<any>}
   */
  request(type, data = {}, opts = {}) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new ConfabError('DISCONNECTED', 'not connected'));
    }
    const id = `c${++this._seq}`;
    const timeoutMs = opts.timeoutMs ?? this.requestTimeoutMs;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new ConfabError('TIMEOUT', `${type}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this._pending.set(id, { resolve, reject, timer, type });
      ws.send(JSON.stringify({ id, type, data }));
    });
  }

  _failPending(code, message) {
    for (const [id, p] of this._pending) {
      clearTimeout(p.timer);
      p.reject(new ConfabError(code, `${p.type}: ${message}`));
      this._pending.delete(id);
    }
  }

  _onMessage(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      console.warn('confab: unreadable frame', text);
      return;
    }
    const { id, type, data } = msg;
    if ((type === 'ack' || type === 'error') && id != null && this._pending.has(String(id))) {
      const p = this._pending.get(String(id));
      this._pending.delete(String(id));
      clearTimeout(p.timer);
      if (type === 'ack') p.resolve(data ?? {});
      else p.reject(ConfabError.from(data));
      return;
    }
    if (type === 'error') {
      this.emit(CLIENT_EVENTS.ERROR, ConfabError.from(data));
      return;
    }
    if (type === 'ack') return; // answer to a request that already timed out
    this._track(type, data || {});
    this.emit(type, data || {});
  }

  // ---------------------------------------------------------------- call state

  /** Keeps `this.call` in step with the events of the call this client is joined in. */
  _track(type, data) {
    if (type.startsWith('rtc:')) {
      if (this.media && this.media.callId === data.call_id) {
        this.media.handle(type, data);
      } else if (this._early.length < 64) {
        // The server may offer the subscriber as soon as we are joined, before the ack of our
        // accept/join arrives (acks come after the events a request caused): keep it for the
        // media session that the ack starts.
        this._early.push({ type, data });
      }
      return;
    }
    const call = this.call;
    if (!call || data.call_id !== call.id) return;
    const find = (userId) => call.participants.find((p) => p.user_id === userId);
    switch (type) {
      case 'call:accepted': {
        const p = find(data.user_id);
        if (p) p.status = 'joined';
        this._markOngoing(call);
        break;
      }
      case 'call:participant-joined': {
        let p = find(data.user_id);
        if (!p) {
          p = /** @type {Participant} */ ({ user_id: data.user_id, left_at: null, joined_at: null });
          call.participants.push(p);
        }
        Object.assign(p, {
          name: data.name || p.name || data.user_id,
          status: 'joined',
          joined_at: new Date().toISOString(),
          left_at: null,
          audio_muted: false,
          video_enabled: call.media === 'video',
          screen_sharing: false,
        });
        this._markOngoing(call);
        break;
      }
      case 'call:participant-left': {
        const p = find(data.user_id);
        if (p) Object.assign(p, { status: 'left', left_at: new Date().toISOString() });
        break;
      }
      case 'call:rejected': {
        const p = find(data.user_id);
        if (p) p.status = 'declined';
        break;
      }
      case 'call:missed': {
        const p = find(data.user_id);
        if (p && p.user_id !== call.initiated_by) p.status = 'missed';
        break;
      }
      case 'call:media-changed': {
        const p = find(data.user_id);
        if (p) {
          p.audio_muted = data.audio_muted;
          p.video_enabled = data.video_enabled;
          p.screen_sharing = data.screen_sharing;
        }
        break;
      }
      case 'call:ended':
        Object.assign(call, {
          status: data.status,
          end_reason: data.reason,
          duration_s: data.duration_s,
          ended_at: new Date().toISOString(),
        });
        this._setCall(null);
        return;
      default:
        return;
    }
    this.emit(CLIENT_EVENTS.CALL, { call });
  }

  /** The first accept or join starts a ringing call (contract section 4). */
  _markOngoing(call) {
    if (call.status !== 'ringing') return;
    call.status = 'ongoing';
    call.started_at = call.started_at || new Date().toISOString();
  }

  /** @param {Call} call @param {IceServer[]} [iceServers] */
  _adoptCall(call, iceServers) {
    if (FINAL_STATUSES.has(call.status)) {
      this._setCall(null);
      return;
    }
    const same = this.call?.id === call.id;
    this.call = call;
    this.emit(CLIENT_EVENTS.CALL, { call });
    if (!same) this._startMedia(call, iceServers);
  }

  _setCall(call) {
    if (!call) this._stopMedia();
    this.call = call;
    this.emit(CLIENT_EVENTS.CALL, { call });
  }

  _callId(callId) {
    const id = callId || this.call?.id;
    if (!id) throw new ConfabError('INVALID_STATE', 'not in a call');
    return id;
  }

  // ---------------------------------------------------------------- call operations

  /**
   * Starts a call; the caller is joined at once and starts publishing.
   * @param {{invitees: string[], media?: MediaKind, conversationId?: string, kind?: 'direct'|'group'}} args
   * @returns {Promise<{call: Call, online: string[], offline: string[]}>}
   */
  async initiate({ invitees, media = 'video', conversationId, kind }) {
    const data = { invitees, media };
    if (conversationId) data.conversation_id = conversationId;
    if (kind) data.kind = kind;
    const res = await this.request('call:initiate', data);
    // The initiate answer carries no ICE servers; ask for them (an empty list on loopback).
    let ice = [];
    try {
      ice = (await this.iceServers()).ice_servers;
    } catch (err) {
      console.warn('confab: no ICE servers', err);
    }
    this._adoptCall(res.call, ice);
    return res;
  }

  /** @param {string} callId @returns {Promise<{call: Call, ice_servers: IceServer[]}>} */
  async accept(callId) {
    const res = await this.request('call:accept', { call_id: callId });
    this._adoptCall(res.call, res.ice_servers);
    return res;
  }

  /** @param {string} callId @returns {Promise<{call: Call, ice_servers: IceServer[]}>} */
  async join(callId) {
    const res = await this.request('call:join', { call_id: callId });
    this._adoptCall(res.call, res.ice_servers);
    return res;
  }

  /** @param {string} callId @param {string} [reason] @returns {Promise<Call>} */
  reject(callId, reason) {
    return this.request('call:reject', reason ? { call_id: callId, reason } : { call_id: callId });
  }

  /** @param {string} [callId] defaults to the current call @returns {Promise<Call>} */
  async leave(callId) {
    const id = this._callId(callId);
    try {
      return await this.request('call:leave', { call_id: id });
    } finally {
      if (this.call?.id === id) this._setCall(null);
    }
  }

  /** @param {string} [callId] @param {string} [reason] @returns {Promise<Call>} */
  async end(callId, reason) {
    const id = this._callId(callId);
    try {
      return await this.request('call:end', reason ? { call_id: id, reason } : { call_id: id });
    } finally {
      if (this.call?.id === id) this._setCall(null);
    }
  }

  /**
   * Announces (and applies to the local tracks) a media switch of the current call.
   * Starting or stopping a screen share goes through {@link Confab#shareScreen}.
   * @param {{audioMuted?: boolean, videoEnabled?: boolean, screenSharing?: boolean}} change
   * @returns {Promise<Participant>}
   */
  async setMedia({ audioMuted, videoEnabled, screenSharing }) {
    const data = { call_id: this._callId() };
    if (audioMuted !== undefined) data.audio_muted = audioMuted;
    if (videoEnabled !== undefined) data.video_enabled = videoEnabled;
    if (screenSharing !== undefined) data.screen_sharing = screenSharing;
    this.media?.applySwitches({ audioMuted, videoEnabled });
    return this.request('call:media', data);
  }

  /**
   * Starts or stops sharing the screen: captures it (getDisplayMedia), publishes it as the
   * second video track, and announces `screen_sharing`.
   * @param {boolean} on
   * @returns {Promise<Participant>}
   */
  async shareScreen(on) {
    const callId = this._callId();
    if (on && this.media) await this.media.startScreen();
    if (!on && this.media) await this.media.stopScreen();
    return this.request('call:media', { call_id: callId, screen_sharing: on });
  }

  /**
   * Picks a simulcast layer of, or pauses, one remote video.
   * @param {string} userId @param {'camera'|'screen'} source @param {'off'|'low'|'medium'|'high'} quality
   */
  subscribe(userId, source, quality) {
    return this.request('rtc:subscribe', { call_id: this._callId(), user_id: userId, source, quality });
  }

  /**
   * Sends app data (`call:data`) to the other joined participants of the current call, or
   * only to those in `to`. They get `call:data {call_id, from, payload}` (listen with
   * `client.on('call:data', …)`), each sender's messages in the order sent; this client's
   * other devices do not.
   * @param {any} payload  any JSON value, at most 16 KiB as JSON (else `PAYLOAD_TOO_LARGE`)
   * @param {string[]} [to]  user ids; each must be another joined participant
   * @returns {Promise<{}>}
   */
  sendData(payload, to) {
    const data = { call_id: this._callId(), payload };
    if (to) data.to = to;
    return this.request('call:data', data);
  }

  /**
   * Like {@link subscribe}, for a page that re-renders often: sends only a change. Each choice
   * is sent once per media session; after a reconnect the next call sends it again.
   * @param {string} userId @param {'camera'|'screen'} source @param {'off'|'low'|'medium'|'high'} quality
   * @returns {Promise<void>}
   */
  async setQuality(userId, source, quality) {
    const media = this.media;
    if (!media) return;
    const key = `${userId}/${source}`;
    if (media.qualities.get(key) === quality) return;
    media.qualities.set(key, quality);
    try {
      await this.subscribe(userId, source, quality);
    } catch (err) {
      // Forget it so the next render tries again (the participant may not be in the call yet).
      if (media.qualities.get(key) === quality) media.qualities.delete(key);
      throw err;
    }
  }

  // ---------------------------------------------------------------- REST

  /**
   * One REST call under `/api/v1`; rejects with the contract's ConfabError.
   * @param {string} method @param {string} path @param {object} [body]
   */
  async rest(method, path, body) {
    const res = await fetch(`${this.baseUrl}/api/v1${path}`, {
      method,
      headers: { Authorization: `Bearer ${this.token}`, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (res.status === 204) return null;
    const json = await res.json().catch(() => null);
    if (!res.ok) throw ConfabError.from(json?.error || { code: 'INTERNAL', message: res.statusText });
    return json;
  }

  /**
   * `GET /calls`: the user's call history, newest first.
   * @param {{conversation_id?: string, status?: string, media?: MediaKind,
   *   direction?: 'incoming'|'outgoing', limit?: number, before?: string}} [query]
   * @returns {Promise<{calls: Call[], next_cursor: string|null}>}
   */
  history(query = {}) {
    return this.rest('GET', `/calls${toQuery(query)}`);
  }

  /** `GET /calls/stats` @param {{conversation_id?: string, timeframe?: '7d'|'30d'|'90d'}} [query] */
  stats(query = {}) {
    return this.rest('GET', `/calls/stats${toQuery(query)}`);
  }

  /** `GET /ice-servers` @returns {Promise<{ice_servers: IceServer[], ttl_s: number}>} */
  iceServers() {
    return this.rest('GET', '/ice-servers');
  }

  /** `GET /calls/{id}` @param {string} callId @returns {Promise<Call>} */
  getCall(callId) {
    return this.rest('GET', `/calls/${encodeURIComponent(callId)}`);
  }

  // ---------------------------------------------------------------- media

  _startMedia(call, iceServers) {
    const early = this._early.filter((m) => m.data.call_id === call.id);
    this._stopMedia();
    const media = new CallMedia(this, call.id, iceServers || []);
    this.media = media;
    for (const m of early) media.handle(m.type, m.data);
    media
      .start({ audio: this.capture.audio, video: this.capture.video && call.media === 'video' })
      .catch((err) => media._refused(err));
  }

  _stopMedia() {
    this._early = [];
    if (this.media) {
      this.media.close();
      this.media = null;
    }
  }
}

function toQuery(query) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) params.set(k, String(v));
  const s = params.toString();
  return s ? `?${s}` : '';
}

// ==================================================================== media session

/** @param {IceServer[]} list @returns {RTCIceServer[]} */
function toRtcIceServers(list) {
  return list.map((s) => {
    /** @type {RTCIceServer} */
    const out = { urls: s.urls };
    if (s.username) out.username = s.username;
    if (s.credential) out.credential = s.credential;
    return out;
  });
}

/** The contract's candidate shape from a browser candidate (null = end of candidates). */
function candidateToWire(c) {
  if (!c || !c.candidate) return null;
  return { candidate: c.candidate, sdp_mid: c.sdpMid, sdp_mline_index: c.sdpMLineIndex };
}

/** A browser candidate from the contract's shape. */
function candidateFromWire(c) {
  return { candidate: c.candidate, sdpMid: c.sdp_mid ?? null, sdpMLineIndex: c.sdp_mline_index ?? null };
}

/**
 * `mid` → msid track id, from an SDP text (`a=msid:<stream> <track>` per m-section).
 * @param {string} sdp @returns {Map<string, string>}
 */
function msidByMid(sdp) {
  const out = new Map();
  for (const section of sdp.split(/\r?\nm=/).slice(1)) {
    const mid = /^a=mid:(\S+)/m.exec(section)?.[1];
    const track = /^a=msid:\S+ (\S+)/m.exec(section)?.[1];
    if (mid && track) out.set(mid, track);
  }
  return out;
}

/**
 * Prefixes the msid track id of one m-section with `screen` (contract section 7: a track whose
 * msid track id starts with `screen` is a screen share). Only the copy sent to the server is
 * rewritten; the browser keeps the SDP it generated.
 * @param {string} sdp @param {string} mid
 */
function markScreenSection(sdp, mid) {
  const parts = sdp.split(/(?=\r?\nm=)/);
  return parts
    .map((part) => {
      if (!new RegExp(`^a=mid:${escapeRe(mid)}\\r?$`, 'm').test(part)) return part;
      return part
        .replace(/^(a=msid:\S+ )(?!screen)(\S+)/gm, '$1screen-$2')
        .replace(/^(a=ssrc:\d+ msid:\S+ )(?!screen)(\S+)/gm, '$1screen-$2');
    })
    .join('');
}

function escapeRe(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * The camera is captured at 960x540 because Chromium sends a simulcast layer only when the
 * capture is large enough for it: below about that size the top layer is dropped.
 */
const CAMERA_CONSTRAINTS = { width: { ideal: 960 }, height: { ideal: 540 }, frameRate: { ideal: 30 } };

/**
 * The camera's simulcast layers (section 9.4 of the API docs): the server forwards one of them
 * to each viewer, chosen with `rtc:subscribe` and fitted to the viewer's bandwidth. The RIDs
 * rank lowest first. A grid of small tiles costs each viewer about 150 kbit/s per tile.
 */
const CAMERA_LAYERS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', maxBitrate: 1_500_000 },
];

/**
 * The two peer connections of one joined call (contract section 7).
 */
export class CallMedia {
  /**
   * @param {Confab} client @param {string} callId @param {IceServer[]} iceServers
   */
  constructor(client, callId, iceServers) {
    this.client = client;
    this.callId = callId;
    this.rtcConfig = { iceServers: toRtcIceServers(iceServers), bundlePolicy: 'max-bundle' };
    /** @type {MediaStream|null} microphone + camera */
    this.local = null;
    /** @type {MediaStream|null} */
    this.screen = null;
    /** @type {RTCPeerConnection|null} */
    this.publisher = null;
    /** @type {RTCPeerConnection|null} */
    this.subscriber = null;
    /** @type {{mic?: RTCRtpTransceiver, camera?: RTCRtpTransceiver, screen?: RTCRtpTransceiver}} */
    this.tx = {};
    /** @type {ConfabError|null} set once the server refused media */
    this.unavailable = null;
    /** @type {RemoteTrackInfo[]} the latest `rtc:tracks` list */
    this.trackInfo = [];
    /** `user_id/source` → the quality last sent with `rtc:subscribe` ({@link Confab#setQuality}) */
    this.qualities = new Map();
    this.closed = false;
    /** Publisher negotiations and subscriber answers each run one at a time. */
    this._pubChain = Promise.resolve();
    this._subChain = Promise.resolve();
    this._pubSent = false;
    this._subSent = false;
    this._pubOutbox = [];
    this._subOutbox = [];
    this._pubInbox = [];
    this._subInbox = [];
    this._switches = { audioMuted: false, videoEnabled: true };
  }

  /** Captures the local devices and negotiates the publisher. */
  async start({ audio, video }) {
    this._capture = { audio, video };
    try {
      if (audio || video) {
        this.local = await navigator.mediaDevices.getUserMedia({ audio, video: video && CAMERA_CONSTRAINTS });
      }
    } catch (err) {
      console.warn('confab: no local media', err);
      this.local = null;
    }
    if (this.closed) return this._release();
    this.applySwitches(this._switches);
    this._emitLocal();
    await this._publish();
  }

  /** A re-join after a reconnect: negotiate again if the connections did not survive. */
  async restart() {
    if (this.closed) return;
    this.unavailable = null;
    this.qualities.clear();
    this._closePeers();
    await this._publish();
  }

  /** @returns {boolean} whether the publisher is up (or there is nothing to publish) */
  healthy() {
    if (this.unavailable) return false;
    if (!this.publisher) return !this.local;
    return !['failed', 'closed'].includes(this.publisher.connectionState);
  }

  // ------------------------------------------------------------ publisher

  async _publish() {
    const audio = this.local?.getAudioTracks()[0] || null;
    const video = this.local?.getVideoTracks()[0] || null;
    if (!audio && !video && !this.screen) return; // a viewer publishes nothing (section 7)
    const pc = this._newPeer('publisher');
    this.publisher = pc;
    this._pubSent = false;
    const stream = this.local || new MediaStream();
    // Transceiver order tells the server the source: first audio = microphone, first video =
    // camera, second video = screen. The camera's exists even without a camera track.
    this.tx.mic = pc.addTransceiver(audio || 'audio', { direction: audio ? 'sendonly' : 'inactive', streams: [stream] });
    this.tx.camera = pc.addTransceiver(video || 'video', {
      direction: video ? 'sendonly' : 'inactive',
      streams: [stream],
      sendEncodings: CAMERA_LAYERS,
    });
    // The screen's m-line is negotiated up front, with or without a share, so that sharing
    // later only swaps the sender's track and never renegotiates: a re-offer makes the server
    // forget which SSRC carries which simulcast layer of the camera, and the browser stops
    // naming its layers (mid/rid) once the server has reported on them (see the API docs,
    // section 12).
    const screenTrack = this.screen?.getVideoTracks()[0];
    this.tx.screen = pc.addTransceiver(screenTrack || 'video', { direction: 'sendonly', streams: [stream] });
    await this._negotiatePublisher();
  }

  /** One publisher offer/answer round, queued behind any running one. */
  _negotiatePublisher() {
    const run = async () => {
      const pc = this.publisher;
      if (!pc || this.closed || this.unavailable) return;
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      let sdp = pc.localDescription.sdp;
      if (this.tx.screen?.mid) sdp = markScreenSection(sdp, this.tx.screen.mid);
      const answer = this.client.request('rtc:offer', { call_id: this.callId, target: 'publisher', sdp });
      // The server buffers candidates sent right after the offer.
      this._pubSent = true;
      this._flushOutbox('publisher');
      let res;
      try {
        res = await answer;
      } catch (err) {
        this._refused(err);
        return;
      }
      if (this.closed || pc !== this.publisher) return;
      await pc.setRemoteDescription({ type: 'answer', sdp: res.sdp });
      await this._drainInbox('publisher');
    };
    this._pubChain = this._pubChain.then(run).catch((err) => console.error('confab: publisher', err));
    return this._pubChain;
  }

  /** The server refused media (today: INVALID_STATE, no media engine). Signaling goes on. */
  _refused(err) {
    if (this.unavailable || this.closed) return;
    this.unavailable = err instanceof ConfabError ? err : new ConfabError('INTERNAL', String(err));
    this._closePeers();
    this.client.emit(CLIENT_EVENTS.MEDIA_UNAVAILABLE, { call_id: this.callId, error: this.unavailable });
  }

  /** Mutes the microphone / turns the camera off locally (the track keeps its seat). */
  applySwitches({ audioMuted, videoEnabled }) {
    if (audioMuted !== undefined) this._switches.audioMuted = audioMuted;
    if (videoEnabled !== undefined) this._switches.videoEnabled = videoEnabled;
    for (const t of this.local?.getAudioTracks() || []) t.enabled = !this._switches.audioMuted;
    for (const t of this.local?.getVideoTracks() || []) t.enabled = this._switches.videoEnabled;
  }

  async startScreen() {
    if (this.screen) return;
    const screen = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    const track = screen.getVideoTracks()[0];
    this.screen = screen;
    // The browser's own "stop sharing" button ends the track.
    track.addEventListener('ended', () => {
      if (this.screen === screen) this.client.shareScreen(false).catch(() => {});
    });
    this._emitLocal();
    if (!this.publisher) {
      if (!this.unavailable) await this._publish();
      return;
    }
    await this.tx.screen.sender.replaceTrack(track);
  }

  async stopScreen() {
    const screen = this.screen;
    if (!screen) return;
    this.screen = null;
    for (const t of screen.getTracks()) t.stop();
    this._emitLocal();
    if (this.publisher && this.tx.screen) await this.tx.screen.sender.replaceTrack(null);
  }

  _emitLocal() {
    this.client.emit(CLIENT_EVENTS.MEDIA_LOCAL, { call_id: this.callId, stream: this.local, screen: this.screen });
  }

  // ------------------------------------------------------------ subscriber

  /** Server `rtc:*` messages for this call. */
  handle(type, data) {
    if (data.call_id !== this.callId || this.closed) return;
    if (type === 'rtc:offer' && data.target === 'subscriber') {
      this._subChain = this._subChain
        .then(() => this._answerSubscriber(data.sdp))
        .catch((err) => console.error('confab: subscriber', err));
    } else if (type === 'rtc:candidate') {
      this._remoteCandidate(data.target, data.candidate);
    } else if (type === 'rtc:tracks') {
      this.trackInfo = data.tracks || [];
      this._emitRemote();
    }
  }

  async _answerSubscriber(sdp) {
    if (this.closed) return;
    if (!this.subscriber) {
      const pc = this._newPeer('subscriber');
      pc.ontrack = () => this._emitRemote();
      this.subscriber = pc;
    }
    const pc = this.subscriber;
    this._subSent = false;
    await pc.setRemoteDescription({ type: 'offer', sdp });
    await this._drainInbox('subscriber');
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    const acked = this.client.request('rtc:answer', { call_id: this.callId, target: 'subscriber', sdp: pc.localDescription.sdp });
    this._subSent = true;
    this._flushOutbox('subscriber');
    this._emitRemote();
    await acked;
  }

  /** Builds the list of received tracks from the subscriber's transceivers and `rtc:tracks`. */
  _emitRemote() {
    const pc = this.subscriber;
    /** @type {RemoteTrack[]} */
    const tracks = [];
    if (pc?.remoteDescription) {
      const msids = msidByMid(pc.remoteDescription.sdp);
      const info = new Map(this.trackInfo.map((t) => [t.track_id, t]));
      for (const tr of pc.getTransceivers()) {
        // A track the server no longer forwards: its m-section went inactive or was rejected.
        if (tr.stopped || !tr.mid || ['inactive', 'stopped', 'sendonly'].includes(tr.currentDirection)) continue;
        const t = info.get(msids.get(tr.mid));
        if (!t) continue;
        tracks.push({ user_id: t.user_id, source: t.source, kind: t.kind, muted: t.muted, track_id: t.track_id, track: tr.receiver.track });
      }
    }
    this.client.emit(CLIENT_EVENTS.MEDIA_REMOTE, { call_id: this.callId, tracks });
  }

  // ------------------------------------------------------------ shared plumbing

  /** @param {'publisher'|'subscriber'} target */
  _newPeer(target) {
    const pc = new RTCPeerConnection(this.rtcConfig);
    pc.onicecandidate = (ev) => this._localCandidate(target, candidateToWire(ev.candidate));
    pc.onconnectionstatechange = () =>
      this.client.emit(CLIENT_EVENTS.MEDIA_STATE, { call_id: this.callId, target, state: pc.connectionState });
    return pc;
  }

  _localCandidate(target, candidate) {
    const outbox = target === 'publisher' ? this._pubOutbox : this._subOutbox;
    outbox.push(candidate);
    this._flushOutbox(target);
  }

  _flushOutbox(target) {
    const sent = target === 'publisher' ? this._pubSent : this._subSent;
    if (!sent || this.closed || (target === 'publisher' && this.unavailable)) return;
    const outbox = target === 'publisher' ? this._pubOutbox : this._subOutbox;
    while (outbox.length) {
      const candidate = outbox.shift();
      this.client
        .request('rtc:candidate', { call_id: this.callId, target, candidate })
        .catch((err) => console.warn(`confab: ${target} candidate refused`, err.code));
    }
  }

  _remoteCandidate(target, candidate) {
    (target === 'publisher' ? this._pubInbox : this._subInbox).push(candidate);
    const pc = target === 'publisher' ? this.publisher : this.subscriber;
    if (pc?.remoteDescription) this._drainInbox(target);
  }

  async _drainInbox(target) {
    const pc = target === 'publisher' ? this.publisher : this.subscriber;
    const inbox = target === 'publisher' ? this._pubInbox : this._subInbox;
    while (pc && pc.remoteDescription && inbox.length) {
      const c = inbox.shift();
      try {
        // A null candidate marks the end of the server's candidates.
        await (c ? pc.addIceCandidate(candidateFromWire(c)) : pc.addIceCandidate());
      } catch (err) {
        console.warn(`confab: ${target} candidate`, err);
      }
    }
  }

  _closePeers() {
    for (const pc of [this.publisher, this.subscriber]) pc?.close();
    this.publisher = null;
    this.subscriber = null;
    this.tx = {};
    this._pubOutbox = [];
    this._subOutbox = [];
    this._pubInbox = [];
    this._subInbox = [];
    this._pubSent = false;
    this._subSent = false;
  }

  _release() {
    for (const s of [this.local, this.screen]) for (const t of s?.getTracks() || []) t.stop();
    this.local = null;
    this.screen = null;
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this._closePeers();
    this._release();
    this.client.emit(CLIENT_EVENTS.MEDIA_LOCAL, { call_id: this.callId, stream: null, screen: null });
    this.client.emit(CLIENT_EVENTS.MEDIA_REMOTE, { call_id: this.callId, tracks: [] });
  }
}
