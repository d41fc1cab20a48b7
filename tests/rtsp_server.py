#!/usr/bin/python3
"""A real RTSP server for the stream tests (GStreamer's gst-rtsp-server), serving a media file in a loop.

Run it under Debian's ``/usr/bin/python3`` (it has PyGObject and the GStreamer RTSP server bindings;
the project's venv does not)::

    /usr/bin/python3 tests/rtsp_server.py --port 8554 --path /cam --media traffic_highway.mp4 \
        [--user admin --password secret] [--width 640]

One decoding pipeline reads the file and seeks back to the start at its end, paced at the file's own
frame rate, like a live camera. Each RTSP client gets its own ``appsrc ! x264enc tune=zerolatency !
rtph264pay`` branch fed from it, so clients see an H.264 stream that never ends. With ``--user`` and
``--password`` the server requires HTTP basic authentication (401 otherwise). When it is serving it
prints ``READY rtsp://127.0.0.1:PORT/PATH`` on stdout (without the credentials); it stops on SIGTERM
or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


class LoopingFeed:
    """Decodes the file forever (seek to 0 on EOS) and hands each frame to every attached appsrc."""

    def __init__(self, media: str, width: int | None) -> None:
        scale = f"videoscale ! video/x-raw,width={width},pixel-aspect-ratio=1/1 ! " if width else ""
        self.pipeline = Gst.parse_launch(
            f"uridecodebin uri={Gst.filename_to_uri(media)} ! videoconvert ! "
            f"{scale}video/x-raw,format=I420 ! appsink name=sink emit-signals=true sync=true max-buffers=2 drop=true"
        )
        self.sink = self.pipeline.get_by_name("sink")
        self.sink.connect("new-sample", self._on_sample)
        self.caps: Gst.Caps | None = None
        self.caps_ready = threading.Event()
        self._lock = threading.Lock()
        self._clients: list[Any] = []
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self._on_message)

    def start(self) -> None:
        self.pipeline.set_state(Gst.State.PLAYING)

    def stop(self) -> None:
        self.pipeline.set_state(Gst.State.NULL)

    def attach(self, appsrc: Any) -> None:
        with self._lock:
            self._clients.append(appsrc)

    def detach(self, appsrc: Any) -> None:
        with self._lock:
            if appsrc in self._clients:
                self._clients.remove(appsrc)

    def _on_sample(self, sink: Any) -> Gst.FlowReturn:
        sample = sink.emit("pull-sample")
        if sample is None:
            return Gst.FlowReturn.OK
        if self.caps is None:
            self.caps = sample.get_caps()
            self.caps_ready.set()
        buf = sample.get_buffer()
        with self._lock:
            clients = list(self._clients)
        for appsrc in clients:
            # Fresh buffer per client: appsrc (do-timestamp) stamps it with the client's own clock.
            out = Gst.Buffer.new_wrapped(buf.extract_dup(0, buf.get_size()))
            appsrc.emit("push-buffer", out)
        return Gst.FlowReturn.OK

    def _on_message(self, _bus: Any, msg: Gst.Message) -> None:
        if msg.type == Gst.MessageType.EOS:
            self.pipeline.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0)
        elif msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            print(f"feed error: {err.message} ({dbg})", file=sys.stderr, flush=True)


class Factory(GstRtspServer.RTSPMediaFactory):
    def __init__(self, feed: LoopingFeed, gop: int) -> None:
        super().__init__()
        self.feed = feed
        self.gop = gop
        self.set_shared(False)

    def do_create_element(self, url: Any) -> Gst.Element:
        caps = self.feed.caps.to_string() if self.feed.caps else "video/x-raw,format=I420"
        return Gst.parse_launch(
            f"( appsrc name=src is-live=true do-timestamp=true format=time caps=\"{caps}\" "
            f"! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={self.gop} "
            "! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=1 )"
        )

    def do_configure(self, media: Any) -> None:
        element = media.get_element()
        appsrc = element.get_by_name_recurse_up("src")
        self.feed.attach(appsrc)
        media.connect("unprepared", lambda _m: self.feed.detach(appsrc))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/cam")
    ap.add_argument("--media", required=True, help="video file to serve, looped")
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--width", type=int, default=None, help="scale to this width (keeps aspect)")
    ap.add_argument("--gop", type=int, default=25, help="keyframe interval in frames")
    args = ap.parse_args()

    Gst.init(None)
    loop = GLib.MainLoop()
    feed = LoopingFeed(args.media, args.width)
    feed.start()
    if not feed.caps_ready.wait(10):
        print(f"cannot decode {args.media}", file=sys.stderr, flush=True)
        return 2

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = Factory(feed, args.gop)
    path = args.path if args.path.startswith("/") else "/" + args.path
    server.get_mount_points().add_factory(path, factory)

    if args.user is not None and args.password is not None:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions()
        perms.add_role_from_structure(
            Gst.Structure.new_from_string("viewer, media.factory.access=(boolean)true, "
                                          "media.factory.construct=(boolean)true")
        )
        factory.set_permissions(perms)

    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 3

    def _stop(*_: Any) -> None:
        loop.quit()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    # Let Python signal handlers run while the GLib loop blocks.
    GLib.timeout_add(200, lambda: True)
    print(f"READY rtsp://127.0.0.1:{args.port}{path}", flush=True)
    try:
        loop.run()
    finally:
        feed.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
