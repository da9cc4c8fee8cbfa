// The surface-race replay, drawn in the browser: the tracks arrive once (data) and every frame is drawn here,
// so playing, pausing and scrubbing send nothing over the websocket. A click on the surface sends the
// clicked point back as the trigger value "pick". No network access: everything is in this file.

const FONT = 16;  // px: readable from the back of a lecture hall on a 1920-wide projector
const PAD = {l: 64, r: 16, t: 12, b: 52};  // the surface: axis titles beside the axes
const CPAD = {l: 72, r: 16, t: 30, b: 52};  // the curves: the y title above the plot, never clipped when short
const state = new WeakMap();  // per mounted component: frame, playing, the decoded data

function f32(b64) {
  if (b64 === null) return null;
  const bin = atob(b64), bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Float32Array(bytes.buffer);
}

function decode(data) {
  return {...data, racers: data.racers.map(r => ({
    ...r, x: f32(r.x), y: f32(r.y), loss: f32(r.loss), dist: f32(r.dist), gang: f32(r.gang), mang: f32(r.mang)}))};
}

function logTicks(lo, hi) {  // log10 positions: the decades, or 1-2-5 steps when under two decades are shown
  const out = [];
  for (let e = Math.ceil(lo); e <= Math.floor(hi); e++) out.push(e);
  if (out.length > 7) return out.filter((_, i) => i % Math.ceil(out.length / 7) === 0);
  if (out.length >= 2) return out;
  const fine = [];
  for (let e = Math.floor(lo); e <= Math.ceil(hi); e++) {
    for (const m of [1, 2, 5]) { const t = e + Math.log10(m); if (t >= lo && t <= hi) fine.push(t); }
  }
  return fine.length >= 2 ? fine : niceTicks(lo, hi, 4);
}

function niceTicks(lo, hi, n) {
  const span = hi - lo, raw = span / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map(m => m * mag).find(s => span / s <= n) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9 * span; v += step) out.push(+v.toPrecision(12));
  return out;
}

function fmt(v) {
  return Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(0) : String(+v.toPrecision(4));
}

function sizeCanvas(canvas, w, h) {
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
    canvas.style.width = w + "px"; canvas.style.height = h + "px";
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return ctx;
}

function axes(ctx, w, h, xt, yt, sx, sy, xlab, ylab, ink, ylog, pad) {
  const PAD = pad;
  ctx.strokeStyle = ink; ctx.fillStyle = ink; ctx.lineWidth = 1; ctx.font = `${FONT}px sans-serif`;
  ctx.strokeRect(PAD.l, PAD.t, w - PAD.l - PAD.r, h - PAD.t - PAD.b);
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  for (const v of xt) {
    const px = sx(v);
    ctx.beginPath(); ctx.moveTo(px, h - PAD.b); ctx.lineTo(px, h - PAD.b + 5); ctx.stroke();
    ctx.fillText(fmt(v), px, h - PAD.b + 7);
  }
  ctx.textAlign = "right"; ctx.textBaseline = "middle";
  for (const v of yt) {
    const py = sy(v);
    ctx.beginPath(); ctx.moveTo(PAD.l - 5, py); ctx.lineTo(PAD.l, py); ctx.stroke();
    ctx.fillText(fmt(ylog ? Math.pow(10, v) : v), PAD.l - 7, py);
  }
  ctx.textAlign = "center"; ctx.textBaseline = "bottom";
  ctx.fillText(xlab, (PAD.l + w - PAD.r) / 2, h - 4);
  if (pad === CPAD) {
    ctx.textAlign = "left"; ctx.textBaseline = "top"; ctx.fillText(ylab, 4, 4);
  } else {
    ctx.save(); ctx.translate(16, (PAD.t + h - PAD.b) / 2); ctx.rotate(-Math.PI / 2);
    ctx.textBaseline = "middle"; ctx.fillText(ylab, 0, 0); ctx.restore();
  }
}

function heatImage(d) {
  const n = d.grid_n, img = document.createElement("canvas");
  img.width = n; img.height = n;
  const ctx = img.getContext("2d"), px = ctx.createImageData(n, n);
  const finite = d.band.filter(v => v !== null), lo = Math.min(...finite), hi = Math.max(...finite);
  for (let j = 0; j < n; j++) for (let i = 0; i < n; i++) {
    const v = d.band[j * n + i], o = ((n - 1 - j) * n + i) * 4;  // row 0 is the lowest y: drawn at the bottom
    const g = v === null ? 255 : Math.round(255 - 140 * (v - lo) / Math.max(hi - lo, 1e-12));
    px.data[o] = px.data[o + 1] = px.data[o + 2] = g; px.data[o + 3] = 255;
  }
  ctx.putImageData(px, 0, 0);
  return img;
}

function drawSurface(s) {
  const d = s.d, canvas = s.surface, size = s.size, ink = s.ink;
  const ctx = sizeCanvas(canvas, size, size);
  ctx.clearRect(0, 0, size, size);
  const [x0, x1, y0, y1] = d.domain, W = size - PAD.l - PAD.r, H = size - PAD.t - PAD.b;
  const sx = v => PAD.l + (v - x0) / (x1 - x0) * W, sy = v => PAD.t + (y1 - v) / (y1 - y0) * H;
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(s.heat, PAD.l, PAD.t, W, H);
  ctx.save(); ctx.beginPath(); ctx.rect(PAD.l, PAD.t, W, H); ctx.clip();
  ctx.strokeStyle = "#d62728"; ctx.lineWidth = 3;
  for (const [mx, my] of d.minima) {
    const px = sx(mx), py = sy(my);
    ctx.beginPath(); ctx.moveTo(px - 8, py); ctx.lineTo(px + 8, py); ctx.moveTo(px, py - 8); ctx.lineTo(px, py + 8);
    ctx.stroke();
  }
  ctx.strokeStyle = "#000"; ctx.lineWidth = 2;
  ctx.beginPath(); ctx.arc(sx(d.start[0]), sy(d.start[1]), 7, 0, 2 * Math.PI); ctx.stroke();
  const len = 0.08 * W;  // arrow length: directions only
  for (const r of d.racers) {
    const last = Math.min(s.frame, r.x.length - 1);
    if (last < 0) continue;
    ctx.strokeStyle = r.colour; ctx.fillStyle = r.colour; ctx.lineWidth = 2.5; ctx.setLineDash([]);
    ctx.beginPath(); ctx.moveTo(sx(r.x[0]), sy(r.y[0]));
    for (let i = 1; i <= last; i++) ctx.lineTo(sx(r.x[i]), sy(r.y[i]));
    ctx.stroke();
    const px = sx(r.x[last]), py = sy(r.y[last]);
    if (s.arrows.checked) {
      for (const [ang, dash] of [[r.gang, []], [r.mang, [5, 4]]]) {
        if (!ang || Number.isNaN(ang[last])) continue;
        ctx.setLineDash(dash); ctx.beginPath(); ctx.moveTo(px, py);
        ctx.lineTo(px + len * Math.cos(ang[last]), py - len * Math.sin(ang[last])); ctx.stroke();
      }
      ctx.setLineDash([]);
    }
    ctx.beginPath(); ctx.arc(px, py, 6, 0, 2 * Math.PI); ctx.fill();
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 1.5; ctx.stroke();
  }
  ctx.restore();
  axes(ctx, size, size, niceTicks(x0, x1, 6), niceTicks(y0, y1, 6), sx, sy, "x", "y", ink, false, PAD);
}

function drawCurve(s, canvas, key, title) {
  const PAD = CPAD, d = s.d, w = s.curveW, h = s.curveH, ink = s.ink;
  const ctx = sizeCanvas(canvas, w, h);
  ctx.clearRect(0, 0, w, h);
  const series = d.racers.map(r => r[key]).filter(a => a);
  const log = key === "dist" || d.log_loss;
  const val = v => log ? (v > 0 ? Math.log10(v) : NaN) : v;
  let lo = Infinity, hi = -Infinity;
  for (const a of series) for (const v of a) { const t = val(v); if (Number.isFinite(t)) { lo = Math.min(lo, t); hi = Math.max(hi, t); } }
  if (!Number.isFinite(lo)) { canvas.style.display = "none"; return; }
  canvas.style.display = "";
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const W = w - PAD.l - PAD.r, H = h - PAD.t - PAD.b, last = Math.max(d.steps, 1);
  const sx = v => PAD.l + v / last * W, sy = v => PAD.t + (hi - v) / (hi - lo) * H;
  ctx.save(); ctx.beginPath(); ctx.rect(PAD.l, PAD.t, W, H); ctx.clip();
  for (const r of d.racers) {
    const a = r[key];
    if (!a) continue;
    ctx.strokeStyle = r.colour; ctx.lineWidth = 2.5; ctx.beginPath();
    let pen = false;
    for (let i = 0; i <= Math.min(s.frame, a.length - 1); i++) {
      const t = val(a[i]);
      if (!Number.isFinite(t)) { pen = false; continue; }
      if (pen) ctx.lineTo(sx(i), sy(t)); else ctx.moveTo(sx(i), sy(t));
      pen = true;
    }
    ctx.stroke();
  }
  ctx.strokeStyle = ink; ctx.globalAlpha = 0.4; ctx.beginPath();
  ctx.moveTo(sx(s.frame), PAD.t); ctx.lineTo(sx(s.frame), PAD.t + H); ctx.stroke(); ctx.globalAlpha = 1;
  ctx.restore();
  axes(ctx, w, h, niceTicks(0, last, 5), log ? logTicks(lo, hi) : niceTicks(lo, hi, 4), sx, sy, "step", title, ink, log, CPAD);
}

function draw(s) {
  s.label.textContent = `Step ${s.frame} of ${s.d.steps}`;
  s.slider.value = String(s.frame);
  s.root.dataset.frame = String(s.frame);
  s.play.textContent = s.playing ? "Pause" : "Play";
  drawSurface(s);
  drawCurve(s, s.lossCanvas, "loss", s.d.log_loss ? "loss (log scale)" : "loss");
  drawCurve(s, s.distCanvas, "dist", "distance to the nearest minimum (log scale)");
}

function layout(s) {
  const width = Math.max(s.root.clientWidth, 320);
  const wide = width >= 760;  // side by side from a 1280-wide laptop up
  const tall = Math.max(window.innerHeight - 140, 360);  // the whole surface on screen under the controls
  s.size = Math.round(wide ? Math.min(width * 0.56, 820, tall) : Math.min(width, 640, tall));
  s.curveW = Math.round(wide ? width - s.size - 24 : width);
  s.curveH = Math.round(wide ? s.size / 2 - 4 : 260);
  s.body.style.flexDirection = wide ? "row" : "column";
  draw(s);
}

function tick(s, now) {
  if (!s.playing) return;
  const rate = s.d.steps / Math.min(Math.max(s.d.steps / 50, 3), 10);  // steps per second: 3-10 s per replay
  const frame = Math.min(s.d.steps, Math.floor(s.from + (now - s.t0) / 1000 * rate));
  if (frame !== s.frame) { s.frame = frame; draw(s); }
  if (s.frame >= s.d.steps) { s.playing = false; draw(s); return; }
  s.raf = requestAnimationFrame(t => tick(s, t));
}

function setPlaying(s, on) {
  cancelAnimationFrame(s.raf);
  s.playing = on && s.d.steps > 0;
  if (s.playing) {
    if (s.frame >= s.d.steps) s.frame = 0;
    s.from = s.frame; s.t0 = performance.now();
    s.raf = requestAnimationFrame(t => tick(s, t));
  }
  draw(s);
}

function build(parent) {
  const root = document.createElement("div");
  root.className = "race";
  root.innerHTML = `
    <div class="bar">
      <button class="play" type="button">Play</button>
      <button class="back" type="button" title="one iteration back">Step back</button>
      <button class="step" type="button" title="one iteration forward">Step</button>
      <input class="scrub" type="range" min="0" max="0" step="1" value="0" aria-label="step">
      <span class="label"></span>
      <label class="arrows-box"><input class="arrows" type="checkbox" checked>
        arrows (solid: −gradient, dashed: −momentum)</label>
    </div>
    <div class="legend"></div>
    <div class="body"><canvas class="surface" title="click to start the race from here"></canvas>
      <div class="curves"><canvas class="loss"></canvas><canvas class="dist"></canvas></div></div>`;
  parent.appendChild(root);
  const q = c => root.querySelector(c);
  return {root, body: q(".body"), surface: q(".surface"), lossCanvas: q(".loss"), distCanvas: q(".dist"),
          play: q(".play"), back: q(".back"), step: q(".step"), slider: q(".scrub"), label: q(".label"),
          arrows: q(".arrows"), legend: q(".legend"), frame: 0, playing: false};
}

export default function (component) {
  const {data, parentElement, setTriggerValue} = component;
  let s = state.get(parentElement);
  if (!s) {
    s = build(parentElement);
    state.set(parentElement, s);
    s.play.onclick = () => setPlaying(s, !s.playing);
    s.step.onclick = () => { setPlaying(s, false); s.frame = Math.min(s.d.steps, s.frame + 1); draw(s); };
    s.back.onclick = () => { setPlaying(s, false); s.frame = Math.max(0, s.frame - 1); draw(s); };
    s.slider.oninput = () => { const to = Number(s.slider.value); setPlaying(s, false); s.frame = to; draw(s); };
    s.arrows.onchange = () => draw(s);
    s.surface.onclick = ev => {
      const rect = s.surface.getBoundingClientRect(), [x0, x1, y0, y1] = s.d.domain;
      const W = s.size - PAD.l - PAD.r, H = s.size - PAD.t - PAD.b;
      const fx = (ev.clientX - rect.left - PAD.l) / W, fy = (ev.clientY - rect.top - PAD.t) / H;
      if (fx < 0 || fx > 1 || fy < 0 || fy > 1) return;
      setTriggerValue("pick", [x0 + fx * (x1 - x0), y1 - fy * (y1 - y0)]);
    };
    new ResizeObserver(() => layout(s)).observe(s.root);
  }
  if (s.id !== data.id) {  // a new race or surface: decode once, start from the beginning
    s.id = data.id;
    s.d = decode(data);
    s.heat = heatImage(s.d);
    s.frame = 0;
    s.slider.max = String(s.d.steps);
    s.legend.replaceChildren(...s.d.racers.map(r => {
      const item = document.createElement("span");
      const sw = document.createElement("i");
      sw.style.background = r.colour;
      item.append(sw, document.createTextNode(r.label));  // text, never HTML
      return item;
    }));
    for (const b of [s.play, s.back, s.step, s.slider]) b.disabled = s.d.steps === 0;
    s.ink = getComputedStyle(s.root).color || "#31333f";
    layout(s);
    setPlaying(s, Boolean(data.autoplay));
  }
}
