"use strict";
// A minimal WebGL2 point renderer for the live view. Positions are uploaded once per point set; a
// recolour uploads one byte per point (an index into a table of at most 128 colours, held in a
// uniform) and draws once, so its cost does not grow with anything but the number of points.
// Orbit camera: drag to rotate, shift+drag or right-drag to pan, wheel to zoom, double-click to reset.
// Box selection (when `selecting` is on): drag a rectangle; `onSelect(indices)` gets the points drawn
// inside it (projected with the camera's matrix, in front of the camera).

const VERTEX = `#version 300 es
in vec3 aPosition;
in float aIndex;
uniform mat4 uMatrix;
uniform vec3 uTable[128];
uniform float uSize;
out vec3 vColor;
void main() {
  gl_Position = uMatrix * vec4(aPosition, 1.0);
  gl_PointSize = uSize;
  vColor = uTable[int(aIndex)];
}`;
const FRAGMENT = `#version 300 es
precision mediump float;
in vec3 vColor;
out vec4 color;
void main() { color = vec4(vColor, 1.0); }`;

function compile(gl, type, source) {
  const shader = gl.createShader(type);
  gl.shaderSource(shader, source);
  gl.compileShader(shader);
  if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(shader));
  return shader;
}

function perspective(fovy, aspect, near, far) {
  const f = 1 / Math.tan(fovy / 2), nf = 1 / (near - far);
  return [f / aspect, 0, 0, 0, 0, f, 0, 0, 0, 0, (far + near) * nf, -1, 0, 0, 2 * far * near * nf, 0];
}

function lookAt(eye, target, up) {
  const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
  const norm = (a) => { const l = Math.hypot(...a) || 1; return [a[0] / l, a[1] / l, a[2] / l]; };
  const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
  const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
  const z = norm(sub(eye, target)), x = norm(cross(up, z)), y = cross(z, x);
  return [x[0], y[0], z[0], 0, x[1], y[1], z[1], 0, x[2], y[2], z[2], 0, -dot(x, eye), -dot(y, eye), -dot(z, eye), 1];
}

function multiply(a, b) {  // column-major 4x4: a * b
  const out = new Array(16).fill(0);
  for (let c = 0; c < 4; c++) for (let r = 0; r < 4; r++) for (let k = 0; k < 4; k++) out[c * 4 + r] += a[k * 4 + r] * b[c * 4 + k];
  return out;
}

class PointCloud {
  constructor(canvas) {
    this.canvas = canvas;
    const gl = canvas.getContext("webgl2", {antialias: false, preserveDrawingBuffer: true});
    if (!gl) throw new Error("this browser has no WebGL2, so the 3D view cannot be drawn");
    this.gl = gl;
    const program = gl.createProgram();
    gl.attachShader(program, compile(gl, gl.VERTEX_SHADER, VERTEX));
    gl.attachShader(program, compile(gl, gl.FRAGMENT_SHADER, FRAGMENT));
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program));
    this.program = program;
    this.loc = {position: gl.getAttribLocation(program, "aPosition"), index: gl.getAttribLocation(program, "aIndex"),
                matrix: gl.getUniformLocation(program, "uMatrix"), table: gl.getUniformLocation(program, "uTable"),
                size: gl.getUniformLocation(program, "uSize")};
    this.positions = gl.createBuffer();
    this.indices = gl.createBuffer();
    this.n = 0;
    this.camera = null;
    this.home = null;
    this.frame = null;
    this.xyz = new Float32Array(0);
    this.selecting = false;
    this.onSelect = null;
    this.box = document.createElement("div");  // the rectangle being dragged
    this.box.style.cssText = "position:fixed;border:1px dashed #31333f;background:rgba(49,51,63,0.08);display:none;pointer-events:none";
    document.body.append(this.box);
    this.controls();
  }

  inside(x0, y0, x1, y1) {  // indices of the points drawn inside a rectangle of client coordinates
    const m = this.matrix(), r = this.canvas.getBoundingClientRect(), xyz = this.xyz, out = [];
    const lx = Math.min(x0, x1) - r.left, hx = Math.max(x0, x1) - r.left;
    const ly = Math.min(y0, y1) - r.top, hy = Math.max(y0, y1) - r.top;
    for (let i = 0; i < this.n; i++) {
      const x = xyz[3 * i], y = xyz[3 * i + 1], z = xyz[3 * i + 2];
      const w = m[3] * x + m[7] * y + m[11] * z + m[15];
      if (w <= 0) continue;  // behind the camera
      const sx = ((m[0] * x + m[4] * y + m[8] * z + m[12]) / w + 1) / 2 * r.width;
      const sy = (1 - (m[1] * x + m[5] * y + m[9] * z + m[13]) / w) / 2 * r.height;
      if (sx >= lx && sx <= hx && sy >= ly && sy <= hy) out.push(i);
    }
    return out;
  }

  setPoints(xyz) {  // Float32Array [3n]; resets the camera only for the first point set
    const gl = this.gl, n = xyz.length / 3;
    gl.bindBuffer(gl.ARRAY_BUFFER, this.positions);
    gl.bufferData(gl.ARRAY_BUFFER, xyz, gl.STATIC_DRAW);
    gl.bindBuffer(gl.ARRAY_BUFFER, this.indices);
    gl.bufferData(gl.ARRAY_BUFFER, n, gl.DYNAMIC_DRAW);
    this.n = n;
    this.xyz = xyz;
    const lo = [Infinity, Infinity, Infinity], hi = [-Infinity, -Infinity, -Infinity];
    for (let i = 0; i < xyz.length; i++) { const a = i % 3; lo[a] = Math.min(lo[a], xyz[i]); hi[a] = Math.max(hi[a], xyz[i]); }
    const radius = n ? Math.max(1e-3, 0.5 * Math.hypot(hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2])) : 1;
    const target = n ? [(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, (lo[2] + hi[2]) / 2] : [0, 0, 0];
    this.home = {azimuth: -2.3, elevation: 0.75, distance: 1.7 * radius, target, radius};
    if (!this.camera) this.camera = Object.assign({}, this.home);
  }

  setColors(index, table) {  // Uint8Array [n] into table (array of "#rrggbb"); uploads and draws now
    const gl = this.gl;
    if (index.length !== this.n) throw new Error(`${index.length} colours for ${this.n} points`);
    if (table.length > 128) throw new Error(`${table.length} colours; at most 128`);
    const rgb = new Float32Array(3 * 128);
    table.forEach((h, i) => { for (let c = 0; c < 3; c++) rgb[3 * i + c] = parseInt(h.slice(1 + 2 * c, 3 + 2 * c), 16) / 255; });
    this.table = rgb;
    gl.bindBuffer(gl.ARRAY_BUFFER, this.indices);
    gl.bufferSubData(gl.ARRAY_BUFFER, 0, index);
    this.draw();
  }

  matrix() {
    const c = this.camera, w = this.canvas.width, h = this.canvas.height;
    const eye = [c.target[0] + c.distance * Math.cos(c.elevation) * Math.cos(c.azimuth),
                 c.target[1] + c.distance * Math.cos(c.elevation) * Math.sin(c.azimuth),
                 c.target[2] + c.distance * Math.sin(c.elevation)];
    return multiply(perspective(0.8, w / Math.max(h, 1), c.distance / 100, c.distance + 4 * c.radius),
                    lookAt(eye, c.target, [0, 0, 1]));
  }

  draw() {  // synchronous: the frame is drawn when this returns (gl.finish waits for the rasteriser)
    const gl = this.gl, canvas = this.canvas, dpr = window.devicePixelRatio || 1;
    const width = Math.round(canvas.clientWidth * dpr), height = Math.round(canvas.clientHeight * dpr);
    if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
    gl.viewport(0, 0, canvas.width, canvas.height);
    gl.clearColor(1, 1, 1, 1);
    gl.enable(gl.DEPTH_TEST);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    if (!this.n || !this.table) return;
    gl.useProgram(this.program);
    gl.uniformMatrix4fv(this.loc.matrix, false, new Float32Array(this.matrix()));
    gl.uniform3fv(this.loc.table, this.table);
    gl.uniform1f(this.loc.size, 2.5 * dpr);
    gl.bindBuffer(gl.ARRAY_BUFFER, this.positions);
    gl.enableVertexAttribArray(this.loc.position);
    gl.vertexAttribPointer(this.loc.position, 3, gl.FLOAT, false, 0, 0);
    gl.bindBuffer(gl.ARRAY_BUFFER, this.indices);
    gl.enableVertexAttribArray(this.loc.index);
    gl.vertexAttribPointer(this.loc.index, 1, gl.UNSIGNED_BYTE, false, 0, 0);
    gl.drawArrays(gl.POINTS, 0, this.n);
    gl.finish();
  }

  later() {  // camera moves: at most one draw per animation frame
    if (this.frame === null) this.frame = requestAnimationFrame(() => { this.frame = null; this.draw(); });
  }

  controls() {
    const canvas = this.canvas;
    let drag = null;
    canvas.addEventListener("contextmenu", (e) => e.preventDefault());
    canvas.addEventListener("pointerdown", (e) => {
      drag = {x: e.clientX, y: e.clientY, x0: e.clientX, y0: e.clientY, pan: e.shiftKey || e.button === 2,
              select: this.selecting && e.button === 0};
      canvas.setPointerCapture(e.pointerId);
    });
    canvas.addEventListener("pointerup", (e) => {
      if (drag && drag.select) {
        this.box.style.display = "none";
        const moved = Math.hypot(e.clientX - drag.x0, e.clientY - drag.y0) >= 4;  // a click selects nothing
        if (moved && this.onSelect) this.onSelect(this.inside(drag.x0, drag.y0, e.clientX, e.clientY));
      }
      drag = null;
    });
    canvas.addEventListener("pointermove", (e) => {
      if (drag && drag.select) {  // the rectangle follows the pointer; the camera stays
        Object.assign(this.box.style, {display: "block", left: `${Math.min(drag.x0, e.clientX)}px`,
          top: `${Math.min(drag.y0, e.clientY)}px`, width: `${Math.abs(e.clientX - drag.x0)}px`,
          height: `${Math.abs(e.clientY - drag.y0)}px`});
        return;
      }
      if (!drag || !this.camera) return;
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y, c = this.camera;
      drag.x = e.clientX;
      drag.y = e.clientY;
      if (drag.pan) {  // move the target in the view plane
        const s = c.distance / canvas.clientHeight, a = c.azimuth;
        c.target = [c.target[0] + s * (dx * Math.sin(a) + dy * Math.cos(a) * Math.sin(c.elevation)),
                    c.target[1] + s * (-dx * Math.cos(a) + dy * Math.sin(a) * Math.sin(c.elevation)),
                    c.target[2] - s * dy * Math.cos(c.elevation)];
      } else {
        c.azimuth -= dx * 0.008;
        c.elevation = Math.max(-1.5, Math.min(1.5, c.elevation + dy * 0.008));
      }
      this.later();
    });
    canvas.addEventListener("wheel", (e) => {
      if (!this.camera) return;
      e.preventDefault();
      this.camera.distance = Math.max(this.camera.radius / 50, this.camera.distance * Math.exp(e.deltaY * 0.001));
      this.later();
    }, {passive: false});
    canvas.addEventListener("dblclick", () => { if (this.home) { this.camera = Object.assign({}, this.home); this.later(); } });
    window.addEventListener("resize", () => this.later());
  }
}
