// Type declarations for confab.js, the browser client of Confab (wire contract v2).
// Event payloads follow the contract's section 6; `npm run check` type-checks them against
// types-check/usage.ts.

export type MediaKind = 'audio' | 'video';
export type Source = 'microphone' | 'camera' | 'screen';
export type VideoSource = 'camera' | 'screen';
export type Quality = 'off' | 'low' | 'medium' | 'high';
export type CallKind = 'direct' | 'group';
export type CallStatus = 'ringing' | 'ongoing' | 'completed' | 'missed' | 'rejected' | 'cancelled' | 'busy' | 'failed';
export type ParticipantStatus = 'invited' | 'ringing' | 'joined' | 'left' | 'declined' | 'missed' | 'busy';
export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';
export type PeerTarget = 'publisher' | 'subscriber';
/** Any JSON value: what `call:data` carries. */
export type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

export interface Participant {
  user_id: string;
  name: string;
  status: ParticipantStatus;
  joined_at: string | null;
  left_at: string | null;
  audio_muted: boolean;
  video_enabled: boolean;
  screen_sharing: boolean;
}

export interface Call {
  id: string;
  conversation_id: string | null;
  kind: CallKind;
  media: MediaKind;
  initiated_by: string;
  status: CallStatus;
  created_at: string;
  started_at: string | null;
  ended_at: string | null;
  duration_s: number;
  end_reason: string | null;
  participants: Participant[];
  /** Only in history listings. */
  direction?: 'incoming' | 'outgoing';
}

export interface IceServer {
  urls: string[];
  username?: string;
  credential?: string;
}

/** One entry of `rtc:tracks`. */
export interface RemoteTrackInfo {
  track_id: string;
  stream_id: string;
  user_id: string;
  kind: MediaKind;
  source: Source;
  muted: boolean;
}

/** A received track, mapped to its publisher. */
export interface RemoteTrack {
  user_id: string;
  source: Source;
  kind: MediaKind;
  muted: boolean;
  track_id: string;
  track: MediaStreamTrack;
}

export interface WireCandidate {
  candidate: string;
  sdp_mid: string | null;
  sdp_mline_index: number | null;
}

export interface ConfabOptions {
  /** Server origin, e.g. `http://127.0.0.1:8080` (default: the page's). */
  baseUrl?: string;
  /** The user's JWT. */
  token: string;
  /** How long a request waits for its ack (default 10000). */
  requestTimeoutMs?: number;
  /** First reconnect delay (default 500). */
  reconnectMinMs?: number;
  /** Cap of the reconnect delay (default 15000). */
  reconnectMaxMs?: number;
  /** Re-join the current call if back within this (the server's `disconnect_grace_s`; default 15000). */
  rejoinGraceMs?: number;
}

/** The contract's error shape; also client-side failures (`TIMEOUT`, `DISCONNECTED`). */
export class ConfabError extends Error {
  constructor(code: string, message: string, details?: object);
  readonly name: 'ConfabError';
  code: string;
  details: object | undefined;
  static from(data: { code?: string; message?: string; details?: object } | null | undefined): ConfabError;
}

/** Server events (contract section 6) and the client's own events, by type. */
export interface ConfabEvents {
  // ---- the client's own events
  connection: { state: 'connecting' | 'open' | 'reconnecting' | 'closed'; attempt?: number; delay_ms?: number };
  /** The call this client is joined in changed (or ended: `null`). */
  call: { call: Call | null };
  /** The server refused media for this call. */
  'media:unavailable': { call_id: string; error: ConfabError };
  'media:local': { call_id: string; stream: MediaStream | null; screen: MediaStream | null };
  /** Every received track, after each change. */
  'media:remote': { call_id: string; tracks: RemoteTrack[] };
  'media:state': { call_id: string; target: PeerTarget; state: RTCPeerConnectionState };
  /** The socket came back too late or the re-join failed. */
  'call:lost': { call_id: string; error: ConfabError };
  'call:rejoined': { call_id: string };
  /** An `error` message that answers no pending request. */
  error: ConfabError;

  // ---- server events
  'call:incoming': {
    call_id: string;
    conversation_id: string | null;
    kind: CallKind;
    media: MediaKind;
    caller: { user_id: string; name: string };
  };
  'call:ringing': { call_id: string; user_ids: string[] };
  'call:accepted': { call_id: string; user_id: string; reason?: string };
  'call:rejected': { call_id: string; user_id: string; reason?: string };
  'call:missed': { call_id: string; user_id: string };
  'call:busy': { call_id: string; user_id: string };
  'call:ended': { call_id: string; status: CallStatus; ended_by: string | null; reason: string; duration_s: number };
  'call:participant-joined': { call_id: string; user_id: string; name: string };
  'call:participant-left': {
    call_id: string;
    user_id: string;
    name: string;
    reason: 'left' | 'disconnected' | 'removed' | 'node_lost';
  };
  'call:data': { call_id: string; from: string; payload: Json };
  'call:removed': { call_id: string; reason: string };
  'call:muted-by': { call_id: string; by: string; audio?: boolean; video?: boolean; screen?: boolean };
  'call:media-changed': {
    call_id: string;
    user_id: string;
    audio_muted: boolean;
    video_enabled: boolean;
    screen_sharing: boolean;
  };
  'call:active-speakers': { call_id: string; user_ids: string[] };
  'call:quality': {
    call_id: string;
    user_id: string;
    score: 1 | 2 | 3 | 4 | 5;
    packet_loss: number;
    jitter_ms: number;
    rtt_ms: number;
    bitrate_bps: number;
  };
  'rtc:offer': { call_id: string; target: 'subscriber'; sdp: string };
  'rtc:candidate': { call_id: string; target: PeerTarget; candidate: WireCandidate | null };
  'rtc:tracks': { call_id: string; tracks: RemoteTrackInfo[] };
  'rtc:layers': { call_id: string; source: VideoSource; rids: string[] };
  'rtc:ice-restart': { call_id: string; target: PeerTarget };
}

export type ConfabEventType = keyof ConfabEvents;

/** Listener of `*`: every event, with its type. */
export type AnyListener = <K extends ConfabEventType>(type: K, data: ConfabEvents[K]) => void;

/** A minimal event emitter; `on` and `once` return a function that removes the listener. */
export class Emitter<Events extends object = ConfabEvents> {
  on<K extends keyof Events & string>(type: K, fn: (data: Events[K]) => void): () => void;
  on(type: '*', fn: (type: keyof Events & string, data: Events[keyof Events]) => void): () => void;
  once<K extends keyof Events & string>(type: K, fn: (data: Events[K]) => void): () => void;
  once(type: '*', fn: (type: keyof Events & string, data: Events[keyof Events]) => void): () => void;
  off(type: (keyof Events & string) | '*', fn: Function): void;
  emit<K extends keyof Events & string>(type: K, data: Events[K]): void;
}

/** The client's own event names. */
export const ClientEvents: Readonly<{
  CONNECTION: 'connection';
  CALL: 'call';
  MEDIA_UNAVAILABLE: 'media:unavailable';
  MEDIA_LOCAL: 'media:local';
  MEDIA_REMOTE: 'media:remote';
  MEDIA_STATE: 'media:state';
  CALL_LOST: 'call:lost';
  CALL_REJOINED: 'call:rejoined';
  ERROR: 'error';
}>;

export interface InitiateArgs {
  invitees: string[];
  media?: MediaKind;
  conversationId?: string;
  kind?: CallKind;
}

export interface MediaChange {
  audioMuted?: boolean;
  videoEnabled?: boolean;
  screenSharing?: boolean;
}

export interface HistoryQuery {
  conversation_id?: string;
  status?: CallStatus;
  media?: MediaKind;
  direction?: 'incoming' | 'outgoing';
  limit?: number;
  before?: string;
}

export interface CallStats {
  timeframe: '7d' | '30d' | '90d';
  total: number;
  by_media: Partial<Record<MediaKind, number>>;
  by_status: Partial<Record<CallStatus, number>>;
  by_direction: Partial<Record<'incoming' | 'outgoing', number>>;
  total_duration_s: number;
  average_duration_s: number;
  longest_s: number;
  shortest_s: number;
  per_day: Record<string, number>;
  quality: {
    avg_packet_loss: number | null;
    avg_jitter_ms: number | null;
    avg_rtt_ms: number | null;
    avg_bitrate_bps: number | null;
  };
}

/** A signaling client: one WebSocket, reconnect with backoff, and the media of the joined call. */
export class Confab extends Emitter<ConfabEvents> {
  constructor(options: ConfabOptions);
  readonly baseUrl: string;
  token: string;
  requestTimeoutMs: number;
  reconnectMinMs: number;
  reconnectMaxMs: number;
  rejoinGraceMs: number;
  state: ConnectionState;
  ws: WebSocket | null;
  /** The call this client is joined in. */
  call: Call | null;
  media: CallMedia | null;
  /** What to capture when a call starts. */
  capture: { audio: boolean; video: boolean };
  readonly connected: boolean;

  /** Opens the socket; resolves once open (rejects if the first attempt fails, and keeps trying). */
  connect(): Promise<void>;
  /** Closes the socket for good and drops media. Does not leave the call. */
  close(): void;
  /** One request; resolves with its `ack` data or rejects with a ConfabError. */
  request(type: string, data?: object, opts?: { timeoutMs?: number }): Promise<any>;

  initiate(args: InitiateArgs): Promise<{ call: Call; online: string[]; offline: string[] }>;
  accept(callId: string): Promise<{ call: Call; ice_servers: IceServer[] }>;
  join(callId: string): Promise<{ call: Call; ice_servers: IceServer[] }>;
  reject(callId: string, reason?: string): Promise<Call>;
  /** Leaves the given call, or the current one. */
  leave(callId?: string): Promise<Call>;
  end(callId?: string, reason?: string): Promise<Call>;
  /** Announces (and applies to the local tracks) a media switch of the current call. */
  setMedia(change: MediaChange): Promise<Participant>;
  shareScreen(on: boolean): Promise<Participant>;
  /** Picks a simulcast layer of, or pauses, one remote video. */
  subscribe(userId: string, source: VideoSource, quality: Quality): Promise<{}>;
  /** Like `subscribe`, sending only a change. */
  setQuality(userId: string, source: VideoSource, quality: Quality): Promise<void>;
  /**
   * Sends app data (`call:data`) to the other joined participants of the current call, or only
   * to those in `to`; at most 16 KiB as JSON (else `PAYLOAD_TOO_LARGE`).
   */
  sendData(payload: Json, to?: string[]): Promise<{}>;

  /** One REST call under `/api/v1`; rejects with the contract's ConfabError. */
  rest(method: string, path: string, body?: object): Promise<any>;
  history(query?: HistoryQuery): Promise<{ calls: Call[]; next_cursor: string | null }>;
  stats(query?: { conversation_id?: string; timeframe?: '7d' | '30d' | '90d' }): Promise<CallStats>;
  iceServers(): Promise<{ ice_servers: IceServer[]; ttl_s: number }>;
  getCall(callId: string): Promise<Call>;
}

/** The two peer connections of one joined call (contract section 7); `Confab` makes it. */
export class CallMedia {
  constructor(client: Confab, callId: string, iceServers: IceServer[]);
  readonly client: Confab;
  readonly callId: string;
  rtcConfig: RTCConfiguration;
  /** Microphone + camera. */
  local: MediaStream | null;
  screen: MediaStream | null;
  publisher: RTCPeerConnection | null;
  subscriber: RTCPeerConnection | null;
  tx: { mic?: RTCRtpTransceiver; camera?: RTCRtpTransceiver; screen?: RTCRtpTransceiver };
  /** Set once the server refused media. */
  unavailable: ConfabError | null;
  /** The latest `rtc:tracks` list. */
  trackInfo: RemoteTrackInfo[];
  /** `user_id/source` to the quality last sent with `rtc:subscribe`. */
  qualities: Map<string, Quality>;
  closed: boolean;

  start(capture: { audio: boolean; video: boolean }): Promise<void>;
  restart(): Promise<void>;
  healthy(): boolean;
  applySwitches(switches: { audioMuted?: boolean; videoEnabled?: boolean }): void;
  startScreen(): Promise<void>;
  stopScreen(): Promise<void>;
  /** Server `rtc:*` messages for this call. */
  handle<K extends 'rtc:offer' | 'rtc:candidate' | 'rtc:tracks'>(type: K, data: ConfabEvents[K]): void;
  close(): void;
}
