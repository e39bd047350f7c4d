#!/usr/bin/env python3
"""An aiortc participant for Confab: the interop counterpart of the webrtc-rs bot.

It connects to Confab's WebSocket signaling (/ws?token=JWT), gets into a call (initiates a direct
call with --invite USER, a group call in a conversation with --conversation ID --invite USER...,
joins an existing call with --join CALL_ID, or else accepts the first call:incoming), publishes aiortc's generated audio and
video on its publisher peer connection, answers every server rtc:offer on its subscriber peer
connection, and counts what arrives per remote track: RTP packets (as the receiver sees them),
frames reassembled from them (what reaches the decoder) and decoded frames (track.recv()).

Output: JSON lines on stdout. {"event": "connected", ...} once the signaling socket is open (an
invitee is rung only if it is online when the call starts), {"event": "joined", ...} once in the call, {"event": "progress",
...} every second, and a final {"event": "result", ...}. Diagnostics go to stderr. Exit code 0
after a normal run, 1 on any failure (the error is printed as {"event": "error", ...}).

Traffic stays on loopback: no ICE servers, and aioice gathers host candidates on 127.0.0.1 only.

    python peer.py --url http://127.0.0.1:8080 --token "$JWT" --user carol --invite bob
"""

import argparse
import asyncio
import json
import logging
import sys
import time
from urllib.parse import quote

import aioice.ice
import websockets
from aiortc import (
    AudioStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.sdp import candidate_from_sdp


def loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """aioice gathers on every interface; test traffic must stay on loopback."""
    return ["127.0.0.1"] if use_ipv4 else []


aioice.ice.get_host_addresses = loopback_only

# RTP packets per receiver, counted before the jitter buffer and the decoder.
RTP_COUNTS: dict[int, int] = {}
_handle_rtp_packet = RTCRtpReceiver._handle_rtp_packet


async def _counting_handle_rtp_packet(self, packet, arrival_time_ms):
    RTP_COUNTS[id(self)] = RTP_COUNTS.get(id(self), 0) + 1
    await _handle_rtp_packet(self, packet, arrival_time_ms)


RTCRtpReceiver._handle_rtp_packet = _counting_handle_rtp_packet

# Encoded frames the jitter buffer reassembled from RTP, per jitter buffer (one per receiver):
# what reached the decoder, whether or not it then decoded.
FRAME_COUNTS: dict[int, int] = {}
_jitter_add = JitterBuffer.add


def _counting_jitter_add(self, packet):
    pli_flag, frame = _jitter_add(self, packet)
    if frame is not None:
        FRAME_COUNTS[id(self)] = FRAME_COUNTS.get(id(self), 0) + 1
    return pli_flag, frame


JitterBuffer.add = _counting_jitter_add


class DecodeErrors(logging.Filter):
    """Counts aiortc's per-frame decode warnings and lets only the first of each kind through."""

    def __init__(self):
        super().__init__()
        self.counts: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "failed to decode" not in message:
            return True
        kind = "video" if "(video)" in message else "audio"
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return self.counts[kind] == 1


DECODE_ERRORS = DecodeErrors()
logging.getLogger("aiortc.rtcrtpreceiver").addFilter(DECODE_ERRORS)


def msid_by_mid(sdp: str) -> dict[str, str]:
    """The msid track id of each media section, keyed by its mid, read from the SDP text.

    aiortc names a remote track after `a=msid` only when a session-level `a=msid-semantic:WMS`
    names its stream; otherwise it picks a random id. Reading the SDP ourselves keeps the match
    with rtc:tracks independent of that.
    """
    found, mid, msid = {}, None, None
    for line in sdp.splitlines() + ["m="]:
        if line.startswith("m="):
            if mid is not None and msid is not None:
                found[mid] = msid
            mid, msid = None, None
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:") :].strip()
        elif line.startswith("a=msid:"):
            bits = line[len("a=msid:") :].split()
            if len(bits) >= 2:
                msid = bits[1]
    return found


def emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def log(message: str) -> None:
    print(f"peer.py: {message}", file=sys.stderr, flush=True)


class Signaling:
    """Requests with ids resolved by their ack/error; everything else queued as events."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 1
        self.pending: dict[str, asyncio.Future] = {}
        self.events: asyncio.Queue = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                frame = json.loads(text)
                kind, rid = frame.get("type"), frame.get("id")
                if kind in ("ack", "error") and rid in self.pending:
                    future = self.pending.pop(rid)
                    if not future.done():
                        if kind == "ack":
                            future.set_result(frame.get("data"))
                        else:
                            future.set_exception(RuntimeError(f"server error: {frame.get('data')}"))
                else:
                    await self.events.put(frame)
        except websockets.ConnectionClosed:
            pass
        finally:
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(RuntimeError("signaling socket closed"))
            await self.events.put(None)

    async def request(self, kind: str, data: dict, timeout: float = 15) -> dict:
        rid = f"py{self.next_id}"
        self.next_id += 1
        future = asyncio.get_running_loop().create_future()
        self.pending[rid] = future
        await self.ws.send(json.dumps({"id": rid, "type": kind, "data": data}))
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise RuntimeError(f"no answer to {kind} within {timeout} s") from None

    async def next_event(self, kind: str, timeout: float) -> dict:
        """The next event of `kind`; events of other kinds before it are dropped."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"no {kind} within {timeout} s")
            try:
                frame = await asyncio.wait_for(self.events.get(), left)
            except asyncio.TimeoutError:
                continue
            if frame is None:
                raise RuntimeError(f"signaling socket closed while waiting for {kind}")
            if frame.get("type") == kind:
                return frame.get("data") or {}


class Peer:
    def __init__(self, signaling: Signaling, user: str, log_sdp: bool = False):
        self.signaling = signaling
        self.log_sdp = log_sdp
        self.user = user
        self.call_id = None
        # Stock aiortc: no ICE servers and max-bundle, nothing else. (Under aiortc's default,
        # balanced, policy a second m-section of a kind, a second publisher's camera, is tied to a
        # transport that bundling then stops, and its receiver never starts.)
        config = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        self.publisher = RTCPeerConnection(config)
        self.subscriber = RTCPeerConnection(config)
        self.track_meta: dict[str, dict] = {}  # track_id -> entry of any rtc:tracks so far
        self.msid_by_mid: dict[str, str] = {}  # from the latest subscriber offer
        self.remote: list[dict] = []  # one entry per remote track: transceiver, decoded frames
        self.offers_answered = 0
        # Set once the server's answer is applied: its trickled candidates follow the answer's
        # ack and are added after it, as to any connection with a remote description.
        self.publisher_answered = asyncio.Event()
        self.errors: list[str] = []
        self.subscriber.on("track", self._on_track)
        for role, pc in (("publisher", self.publisher), ("subscriber", self.subscriber)):
            pc.on(
                "connectionstatechange",
                lambda role=role, pc=pc: log(f"{role} connection: {pc.connectionState}"),
            )

    def _on_track(self, track) -> None:
        transceiver = next(
            (t for t in self.subscriber.getTransceivers() if t.receiver.track is track), None
        )
        entry = {"track": track, "transceiver": transceiver, "frames": 0, "ended": False}
        self.remote.append(entry)
        log(f"remote {track.kind} track {track.id}")

        async def consume() -> None:
            try:
                while True:
                    await track.recv()
                    entry["frames"] += 1
            except MediaStreamError:
                entry["ended"] = True

        entry["task"] = asyncio.create_task(consume())  # referenced, so it is not collected

    async def join(
        self, invite: list[str], conversation: str | None, call_id: str | None, timeout: float
    ) -> None:
        if call_id:
            await self.signaling.request("call:join", {"call_id": call_id})
            self.call_id = call_id
        elif invite:
            body = {"invitees": invite, "media": "video"}
            if conversation:
                body.update(conversation_id=conversation, kind="group")
            created = await self.signaling.request("call:initiate", body)
            self.call_id = created["call"]["id"]
        else:
            incoming = await self.signaling.next_event("call:incoming", timeout)
            self.call_id = incoming["call_id"]
            await self.signaling.request("call:accept", {"call_id": self.call_id})
        emit("joined", call_id=self.call_id, user=self.user)

    async def publish(self) -> None:
        self.publisher.addTransceiver(AudioStreamTrack(), direction="sendonly")
        self.publisher.addTransceiver(VideoStreamTrack(), direction="sendonly")
        # aiortc gathers while setting the local description; the offer then carries the
        # candidates, so nothing is trickled.
        await self.publisher.setLocalDescription(await self.publisher.createOffer())
        ack = await self.signaling.request(
            "rtc:offer",
            {
                "call_id": self.call_id,
                "target": "publisher",
                "sdp": self.publisher.localDescription.sdp,
            },
        )
        if self.log_sdp:
            log(f"publisher offer:\n{self.publisher.localDescription.sdp}")
            log(f"publisher answer:\n{ack['sdp']}")
        await self.publisher.setRemoteDescription(RTCSessionDescription(ack["sdp"], "answer"))
        self.publisher_answered.set()
        log("publisher negotiated")

    async def serve_events(self) -> None:
        """Answers subscriber offers and keeps rtc:tracks, one event at a time."""
        while True:
            frame = await self.signaling.events.get()
            if frame is None:
                return
            kind, data = frame.get("type"), frame.get("data") or {}
            try:
                if kind == "rtc:offer" and data.get("target") == "subscriber":
                    if self.log_sdp:
                        log(f"subscriber offer:\n{data['sdp']}")
                    self.msid_by_mid.update(msid_by_mid(data["sdp"]))
                    await self.subscriber.setRemoteDescription(
                        RTCSessionDescription(data["sdp"], "offer")
                    )
                    await self.subscriber.setLocalDescription(await self.subscriber.createAnswer())
                    await self.signaling.request(
                        "rtc:answer",
                        {
                            "call_id": data["call_id"],
                            "target": "subscriber",
                            "sdp": self.subscriber.localDescription.sdp,
                        },
                    )
                    self.offers_answered += 1
                    log(f"answered subscriber offer {self.offers_answered}")
                elif kind == "rtc:tracks":
                    # Merged, not replaced: a track that has left keeps its name in the report.
                    self.track_meta.update({t["track_id"]: t for t in data.get("tracks", [])})
                elif kind == "rtc:candidate" and data.get("candidate"):
                    c = data["candidate"]
                    candidate = candidate_from_sdp(c["candidate"].removeprefix("candidate:"))
                    candidate.sdpMid = c.get("sdp_mid")
                    candidate.sdpMLineIndex = c.get("sdp_mline_index")
                    if data.get("target") == "publisher":
                        await self.publisher_answered.wait()
                        await self.publisher.addIceCandidate(candidate)
                    else:
                        await self.subscriber.addIceCandidate(candidate)
                elif kind == "call:ended":
                    log(f"call ended: {data}")
            except Exception as exc:  # reported in the result; the run goes on
                self.errors.append(f"{kind}: {exc!r}")
                log(f"handling {kind} failed: {exc!r}")

    def report(self) -> list[dict]:
        tracks = []
        for entry in self.remote:
            track, transceiver = entry["track"], entry["transceiver"]
            receiver = transceiver.receiver if transceiver else None
            jitter = getattr(receiver, "_RTCRtpReceiver__jitter_buffer", None)
            msid_track_id = self.msid_by_mid.get(transceiver.mid) if transceiver else None
            meta = self.track_meta.get(msid_track_id or track.id, {})
            tracks.append(
                {
                    "track_id": msid_track_id,
                    # aiortc's own name for the track: the msid track id, or a random one when
                    # the offer had no a=msid-semantic naming the stream.
                    "aiortc_track_id": track.id,
                    "user_id": meta.get("user_id"),
                    "source": meta.get("source"),
                    "kind": track.kind,
                    "rtp_packets": RTP_COUNTS.get(id(receiver), 0),
                    "frames_assembled": FRAME_COUNTS.get(id(jitter), 0),
                    "frames_decoded": entry["frames"],
                    "ended": entry["ended"],
                }
            )
        return tracks

    def status(self) -> dict:
        return {
            "publisher_state": self.publisher.connectionState,
            "subscriber_state": self.subscriber.connectionState,
            "offers_answered": self.offers_answered,
            "tracks": self.report(),
            "decode_errors": dict(DECODE_ERRORS.counts),
            "errors": self.errors,
        }

    async def close(self) -> None:
        await self.publisher.close()
        await self.subscriber.close()


async def run(args) -> None:
    url = args.url.replace("http", "ws", 1).rstrip("/") + "/ws?token=" + quote(args.token)
    async with websockets.connect(url, open_timeout=10) as ws:
        signaling = Signaling(ws)
        emit("connected", user=args.user)
        peer = Peer(signaling, args.user, args.log_sdp)
        try:
            await peer.join(args.invite, args.conversation, args.join, args.timeout)
            events = asyncio.create_task(peer.serve_events())
            await peer.publish()
            deadline = time.monotonic() + args.duration
            while time.monotonic() < deadline:
                await asyncio.sleep(1)
                if events.done():
                    raise RuntimeError("the signaling connection closed")
                emit("progress", **peer.status())
            emit("result", call_id=peer.call_id, user=args.user, **peer.status())
            events.cancel()
        finally:
            await peer.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="server base URL, http://HOST:PORT")
    parser.add_argument("--token", required=True, help="JWT of this participant")
    parser.add_argument("--user", required=True, help="user id in the token (for the report)")
    parser.add_argument(
        "--invite",
        action="append",
        default=[],
        help="initiate a video call to this user (repeat for a group call)",
    )
    parser.add_argument(
        "--conversation", help="with --invite: a group call in this conversation"
    )
    parser.add_argument("--join", metavar="CALL_ID", help="join this existing call")
    parser.add_argument("--duration", type=float, default=8, help="seconds to publish after joining")
    parser.add_argument("--timeout", type=float, default=20, help="seconds to wait for a call")
    parser.add_argument("--log-sdp", action="store_true", help="print every SDP to stderr")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        asyncio.run(asyncio.wait_for(run(args), args.timeout + args.duration + 30))
    except Exception as exc:
        emit("error", message=repr(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
