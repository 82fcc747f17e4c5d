//! PipeWire capture (Linux): a video stream that consumes a `Video/Source` node (a screen-cast
//! stream from a compositor or portal, a camera, or any producer) on its own thread.
//!
//! The stream asks for packed 32-bit RGB (BGRx, RGBx, BGRA or RGBA) and links itself to the
//! target node from code (`link-factory`), so it works with or without a session manager
//! (WirePlumber) and never races one: the stream does not ask to be autoconnected. Each
//! buffer's rows are copied, as BGRx, into the latest-frame slot; [`VideoSource::capture`]
//! converts the newest frame to I420 (the screen did not change when no new buffer came).
//! Frames from the producer that are larger than the size fixed at open are cropped, smaller
//! ones padded black.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ::pipewire as pw;
use pw::spa;
use pw::spa::param::video::VideoFormat as PwFormat;
use pw::spa::pod::Pod;
use pw::types::ObjectType;

use crate::x11::bgrx_to_i420;
use crate::{MediaError, RawFrame, VideoFormat, VideoSource};

/// How long [`PipeWireSource::open`] waits for the first frame.
pub const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(5);

/// Which node to capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipeWireTarget {
    /// The first `Video/Source` node the registry announces.
    FirstVideoSource,
    /// The node with this `node.name`.
    Name(String),
    /// The node with this global id.
    Id(u32),
}

impl PipeWireTarget {
    /// Parses a `--pipewire-target` value: a number is a node id, anything else a node name,
    /// empty means the first video source.
    pub fn parse(s: &str) -> Self {
        let s = s.trim();
        if s.is_empty() {
            Self::FirstVideoSource
        } else if let Ok(id) = s.parse() {
            Self::Id(id)
        } else {
            Self::Name(s.to_owned())
        }
    }

    fn matches(&self, id: u32, name: Option<&str>, class: Option<&str>) -> bool {
        match self {
            Self::FirstVideoSource => class == Some("Video/Source"),
            Self::Name(n) => name == Some(n.as_str()),
            Self::Id(i) => *i == id,
        }
    }
}

impl std::fmt::Display for PipeWireTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::FirstVideoSource => f.write_str("the first Video/Source node"),
            Self::Name(n) => write!(f, "node {n:?}"),
            Self::Id(i) => write!(f, "node id {i}"),
        }
    }
}

/// The newest frame, written by the PipeWire thread.
#[derive(Default)]
struct Latest {
    /// Frames received so far (0: none yet).
    seq: u64,
    width: usize,
    height: usize,
    /// Rows of `width * 4` bytes, BGRx.
    bgrx: Vec<u8>,
    capture_us: u64,
    /// Why the PipeWire thread stopped, if it did.
    error: Option<String>,
}

#[derive(Default)]
struct Shared {
    latest: Mutex<Latest>,
    changed: Condvar,
}

impl Shared {
    fn fail(&self, e: String) {
        let mut l = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        l.error.get_or_insert(e);
        self.changed.notify_all();
    }
}

/// Captures a PipeWire video node; see the module docs.
pub struct PipeWireSource {
    shared: Arc<Shared>,
    format: VideoFormat,
    quit: pw::channel::Sender<()>,
    thread: Option<JoinHandle<()>>,
    /// Reused BGRx buffer of the frame being converted.
    scratch: Vec<u8>,
}

impl std::fmt::Debug for PipeWireSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeWireSource")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl PipeWireSource {
    /// Connects to the PipeWire daemon at `remote` (a socket name or absolute path; `None`:
    /// `$PIPEWIRE_REMOTE`, else `$XDG_RUNTIME_DIR/pipewire-0`), links a stream to `target` and
    /// waits up to [`FIRST_FRAME_TIMEOUT`] for its first frame, whose size (cut to even) fixes
    /// the format. `fps` is the nominal rate reported to the encoder.
    pub fn open(
        target: &PipeWireTarget,
        remote: Option<&str>,
        fps: u32,
    ) -> Result<Self, MediaError> {
        crate::init()?;
        let shared = Arc::new(Shared::default());
        let (quit, quit_rx) = pw::channel::channel::<()>();
        let thread = {
            let shared = Arc::clone(&shared);
            let target = target.clone();
            let remote = remote.map(str::to_owned);
            std::thread::Builder::new()
                .name("wavry-pipewire".into())
                .spawn(move || {
                    if let Err(e) = run(&target, remote.as_deref(), fps, &shared, quit_rx) {
                        shared.fail(e);
                    }
                })
                .map_err(|e| MediaError::Unavailable("PipeWire capture", e.to_string()))?
        };
        let mut this = Self {
            shared,
            format: VideoFormat {
                width: 0,
                height: 0,
                fps,
            },
            quit,
            thread: Some(thread),
            scratch: Vec::new(),
        };
        let deadline = Instant::now() + FIRST_FRAME_TIMEOUT;
        let (w, h) = {
            let mut l = this
                .shared
                .latest
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            loop {
                if let Some(e) = &l.error {
                    return Err(MediaError::Unavailable("PipeWire capture", e.clone()));
                }
                if l.seq > 0 {
                    break (l.width, l.height);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(MediaError::Unavailable(
                        "PipeWire capture",
                        format!(
                            "no frame from {target} within {FIRST_FRAME_TIMEOUT:?}: is a video \
                             source (screen cast) running, and is this the right daemon \
                             ($XDG_RUNTIME_DIR, $PIPEWIRE_REMOTE)?"
                        ),
                    ));
                }
                l = this
                    .shared
                    .changed
                    .wait_timeout(l, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        };
        this.format.width = u32::try_from(w).unwrap_or(u32::MAX) & !1;
        this.format.height = u32::try_from(h).unwrap_or(u32::MAX) & !1;
        this.format.validate()?;
        tracing::info!(%target, width = w, height = h, "PipeWire capture started");
        Ok(this)
    }
}

impl VideoSource for PipeWireSource {
    fn name(&self) -> &'static str {
        "pipewire"
    }

    fn format(&self) -> VideoFormat {
        self.format
    }

    fn capture(&mut self, frame: &mut RawFrame) -> Result<(), MediaError> {
        let (w, h) = (self.format.width as usize, self.format.height as usize);
        let capture_us = {
            let l = self
                .shared
                .latest
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(e) = &l.error {
                return Err(MediaError::Unavailable("PipeWire capture", e.clone()));
            }
            // Crop or pad the producer's frame to the size fixed at open.
            self.scratch.clear();
            self.scratch.resize(w * h * 4, 0);
            let (cw, ch) = (w.min(l.width), h.min(l.height));
            for row in 0..ch {
                let src = &l.bgrx[row * l.width * 4..][..cw * 4];
                self.scratch[row * w * 4..][..cw * 4].copy_from_slice(src);
            }
            l.capture_us
        };
        frame.reshape(self.format.width, self.format.height);
        bgrx_to_i420(&self.scratch, w, h, frame);
        frame.capture_us = capture_us;
        Ok(())
    }
}

impl Drop for PipeWireSource {
    fn drop(&mut self) {
        // Fails only when the loop already ended.
        let _ = self.quit.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the stream negotiated.
#[derive(Debug, Clone, Copy, Default)]
struct Negotiated {
    width: usize,
    height: usize,
    /// Byte order of the packed pixels: true for RGBx / RGBA, false for BGRx / BGRA.
    rgb: bool,
}

/// The PipeWire thread: main loop, registry watch, stream, link; until `quit` fires.
fn run(
    target: &PipeWireTarget,
    remote: Option<&str>,
    fps: u32,
    shared: &Arc<Shared>,
    quit: pw::channel::Receiver<()>,
) -> Result<(), String> {
    pw::init();
    let mainloop = pw::main_loop::MainLoopRc::new(None).map_err(|e| format!("main loop: {e}"))?;
    let context =
        pw::context::ContextRc::new(&mainloop, None).map_err(|e| format!("context: {e}"))?;
    let props = remote.map(|r| pw::properties::properties! { *pw::keys::REMOTE_NAME => r });
    let core = context
        .connect_rc(props)
        .map_err(|e| format!("connecting to the PipeWire daemon: {e}"))?;
    let registry = core.get_registry().map_err(|e| format!("registry: {e}"))?;

    let target_id: Rc<Cell<Option<u32>>> = Rc::new(Cell::new(None));
    let own_id: Rc<Cell<Option<u32>>> = Rc::new(Cell::new(None));
    // Ports announced so far: (port id, node id, is output). A node's ports appear after the
    // node, so the link waits for the producer's output and our input port.
    let ports: Rc<RefCell<Vec<(u32, u32, bool)>>> = Rc::new(RefCell::new(Vec::new()));
    let link: Rc<RefCell<Option<pw::link::Link>>> = Rc::new(RefCell::new(None));
    let try_link = {
        let (core, target_id, own_id, ports, link) = (
            core.clone(),
            Rc::clone(&target_id),
            Rc::clone(&own_id),
            Rc::clone(&ports),
            Rc::clone(&link),
        );
        Rc::new(move || {
            let (Some(out_node), Some(in_node)) = (target_id.get(), own_id.get()) else {
                return;
            };
            if link.borrow().is_some() {
                return;
            }
            let find = |node: u32, output: bool| {
                ports
                    .borrow()
                    .iter()
                    .find(|p| p.1 == node && p.2 == output)
                    .map(|p| p.0)
            };
            let (Some(out_port), Some(in_port)) = (find(out_node, true), find(in_node, false))
            else {
                return;
            };
            match core.create_object::<pw::link::Link>(
                "link-factory",
                &pw::properties::properties! {
                    "link.output.node" => out_node.to_string(),
                    "link.output.port" => out_port.to_string(),
                    "link.input.node" => in_node.to_string(),
                    "link.input.port" => in_port.to_string(),
                    "object.linger" => "false",
                },
            ) {
                Ok(l) => *link.borrow_mut() = Some(l),
                Err(e) => tracing::warn!(error = %e, "PipeWire link failed"),
            }
        })
    };

    let _registry_listener = {
        let (target, target_id, ports, try_link) = (
            target.clone(),
            Rc::clone(&target_id),
            Rc::clone(&ports),
            Rc::clone(&try_link),
        );
        registry
            .add_listener_local()
            .global(move |g| {
                let props = g.props;
                let get = |k: &str| props.and_then(|p| p.get(k));
                match g.type_ {
                    ObjectType::Node if target_id.get().is_none() => {
                        let (name, class) = (get("node.name"), get("media.class"));
                        if target.matches(g.id, name, class) {
                            tracing::debug!(id = g.id, ?name, "PipeWire target found");
                            target_id.set(Some(g.id));
                        }
                    }
                    ObjectType::Port => {
                        let node = get("node.id").and_then(|n| n.parse().ok());
                        let output = get("port.direction") == Some("out");
                        if let Some(node) = node {
                            ports.borrow_mut().push((g.id, node, output));
                        }
                    }
                    _ => return,
                }
                try_link();
            })
            .register()
    };

    let stream = pw::stream::StreamBox::new(
        &core,
        "wavry-capture",
        pw::properties::properties! {
            *pw::keys::MEDIA_TYPE => "Video",
            *pw::keys::MEDIA_CATEGORY => "Capture",
            *pw::keys::MEDIA_ROLE => "Screen",
            *pw::keys::NODE_NAME => "wavry-capture",
            "node.want-driver" => "true",
        },
    )
    .map_err(|e| format!("stream: {e}"))?;

    let _stream_listener = {
        let (own_id, try_link, shared_state, shared_frames) = (
            Rc::clone(&own_id),
            Rc::clone(&try_link),
            Arc::clone(shared),
            Arc::clone(shared),
        );
        stream
            .add_local_listener_with_user_data(Negotiated::default())
            .state_changed(move |s, _, _, new| match new {
                pw::stream::StreamState::Paused | pw::stream::StreamState::Streaming => {
                    own_id.set(Some(s.node_id()));
                    try_link();
                }
                pw::stream::StreamState::Error(e) => {
                    shared_state.fail(format!("stream error: {e}"));
                }
                _ => {}
            })
            .param_changed(|s, neg, id, param| {
                let Some(param) = param else { return };
                if id != spa::param::ParamType::Format.as_raw() {
                    return;
                }
                let mut info = spa::param::video::VideoInfoRaw::new();
                if info.parse(param).is_err() {
                    return;
                }
                *neg = Negotiated {
                    width: info.size().width as usize,
                    height: info.size().height as usize,
                    rgb: matches!(info.format(), PwFormat::RGBx | PwFormat::RGBA),
                };
                // Say what buffers we want, as the format is known: several in flight, so the
                // producer never waits on this consumer.
                match buffers_param(neg.width, neg.height) {
                    Ok(pod) => {
                        if let Some(p) = Pod::from_bytes(&pod)
                            && let Err(e) = s.update_params(&mut [p])
                        {
                            tracing::debug!(error = %e, "PipeWire buffer params refused");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "PipeWire buffer params"),
                }
            })
            .process(move |s, neg| {
                let Some(mut buffer) = s.dequeue_buffer() else {
                    return;
                };
                let capture_us = crate::wall_clock_us();
                let Some(d) = buffer.datas_mut().first_mut() else {
                    return;
                };
                let (offset, size, stride) = {
                    let c = d.chunk();
                    (c.offset() as usize, c.size() as usize, c.stride())
                };
                let (w, h) = (neg.width, neg.height);
                let stride = usize::try_from(stride)
                    .ok()
                    .filter(|&s| s >= w * 4)
                    .unwrap_or(w * 4);
                let Some(bytes) = d.data() else { return };
                if w == 0
                    || h == 0
                    || offset + size > bytes.len()
                    || size < stride * (h - 1) + w * 4
                {
                    return;
                }
                let src = &bytes[offset..offset + size];
                let mut l = shared_frames
                    .latest
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                l.bgrx.resize(w * h * 4, 0);
                for row in 0..h {
                    let line = &src[row * stride..][..w * 4];
                    let out = &mut l.bgrx[row * w * 4..][..w * 4];
                    if neg.rgb {
                        for (o, i) in out.chunks_exact_mut(4).zip(line.chunks_exact(4)) {
                            o.copy_from_slice(&[i[2], i[1], i[0], i[3]]);
                        }
                    } else {
                        out.copy_from_slice(line);
                    }
                }
                l.width = w;
                l.height = h;
                l.capture_us = capture_us;
                l.seq += 1;
                shared_frames.changed.notify_all();
            })
            .register()
            .map_err(|e| format!("stream listener: {e}"))?
    };

    let format_pod = enum_format(fps)?;
    let mut params = [Pod::from_bytes(&format_pod).ok_or("format pod")?];
    stream
        .connect(
            spa::utils::Direction::Input,
            None,
            pw::stream::StreamFlags::MAP_BUFFERS,
            &mut params,
        )
        .map_err(|e| format!("connecting the stream: {e}"))?;

    let quitter = mainloop.clone();
    let _quit = quit.attach(mainloop.loop_(), move |()| quitter.quit());
    mainloop.run();
    Ok(())
}

/// The Buffers param for frames of `w` x `h` packed 32-bit pixels: 2..16 buffers (8 by
/// default), one block each, in memory we can map (MemPtr or MemFd).
fn buffers_param(w: usize, h: usize) -> Result<Vec<u8>, String> {
    use spa::pod::{ChoiceValue, Object, Property, PropertyFlags, Value};
    use spa::sys;
    use spa::utils::{Choice, ChoiceEnum, ChoiceFlags};
    let stride = i32::try_from(w * 4).map_err(|_| "frame too wide")?;
    let size = i32::try_from(w * h * 4).map_err(|_| "frame too large")?;
    let prop = |key, value| Property {
        key,
        flags: PropertyFlags::empty(),
        value,
    };
    let data_types = (1 << sys::SPA_DATA_MemPtr) | (1 << sys::SPA_DATA_MemFd);
    let obj = Object {
        type_: spa::utils::SpaTypes::ObjectParamBuffers.as_raw(),
        id: spa::param::ParamType::Buffers.as_raw(),
        properties: vec![
            prop(
                sys::SPA_PARAM_BUFFERS_buffers,
                Value::Choice(ChoiceValue::Int(Choice(
                    ChoiceFlags::empty(),
                    ChoiceEnum::Range {
                        default: 8,
                        min: 2,
                        max: 16,
                    },
                ))),
            ),
            prop(sys::SPA_PARAM_BUFFERS_blocks, Value::Int(1)),
            prop(sys::SPA_PARAM_BUFFERS_size, Value::Int(size)),
            prop(sys::SPA_PARAM_BUFFERS_stride, Value::Int(stride)),
            prop(
                sys::SPA_PARAM_BUFFERS_dataType,
                Value::Choice(ChoiceValue::Int(Choice(
                    ChoiceFlags::empty(),
                    ChoiceEnum::Flags {
                        default: data_types,
                        flags: vec![data_types],
                    },
                ))),
            ),
        ],
    };
    spa::pod::serialize::PodSerializer::serialize(
        std::io::Cursor::new(Vec::new()),
        &Value::Object(obj),
    )
    .map(|(c, _)| c.into_inner())
    .map_err(|e| format!("buffers pod: {e:?}"))
}

/// The EnumFormat we accept: raw video, packed 32-bit RGB, any size, around `fps`.
fn enum_format(fps: u32) -> Result<Vec<u8>, String> {
    use spa::param::format::{FormatProperties, MediaSubtype, MediaType};
    use spa::utils::{Fraction, Rectangle};
    let obj = spa::pod::object!(
        spa::utils::SpaTypes::ObjectParamFormat,
        spa::param::ParamType::EnumFormat,
        spa::pod::property!(FormatProperties::MediaType, Id, MediaType::Video),
        spa::pod::property!(FormatProperties::MediaSubtype, Id, MediaSubtype::Raw),
        spa::pod::property!(
            FormatProperties::VideoFormat,
            Choice,
            Enum,
            Id,
            PwFormat::BGRx,
            PwFormat::BGRx,
            PwFormat::RGBx,
            PwFormat::BGRA,
            PwFormat::RGBA
        ),
        spa::pod::property!(
            FormatProperties::VideoSize,
            Choice,
            Range,
            Rectangle,
            Rectangle {
                width: 1280,
                height: 720
            },
            Rectangle {
                width: 64,
                height: 64
            },
            Rectangle {
                width: 8192,
                height: 8192
            }
        ),
        spa::pod::property!(
            FormatProperties::VideoFramerate,
            Choice,
            Range,
            Fraction,
            Fraction { num: fps, denom: 1 },
            Fraction { num: 0, denom: 1 },
            Fraction {
                num: 1000,
                denom: 1
            }
        ),
    );
    spa::pod::serialize::PodSerializer::serialize(
        std::io::Cursor::new(Vec::new()),
        &spa::pod::Value::Object(obj),
    )
    .map(|(c, _)| c.into_inner())
    .map_err(|e| format!("format pod: {e:?}"))
}
