/* RuhrTwin panorama mode: an equirectangular 360° image seen through a perspective camera.
 *
 * Independent of CesiumJS: one WebGL canvas, one full-screen triangle pair, a fragment shader that turns
 * each screen pixel into a view direction (yaw = bearing clockwise from true north, pitch = elevation)
 * and looks it up in the image. The image's horizontal centre is the recording's heading (from true
 * north), bearings increase to the right, the top row is the zenith (the GPano equirectangular layout).
 *
 *   const pano = new TwinPano(canvas);   pano.show(url, headingDeg) -> Promise (image drawn)
 *   pano.look(yawDeg, pitchDeg, fovDeg)  pano.view() -> {yaw, pitch, fov}
 * Drag to look around, wheel to zoom; the page adds the track stepping and the close button.
 */
(function () {
  "use strict";

  const VERT = `
attribute vec2 a_pos;
varying vec2 v_ndc;
void main() { v_ndc = a_pos; gl_Position = vec4(a_pos, 0.0, 1.0); }`;

  const FRAG = `
precision highp float;
uniform sampler2D u_img;
uniform float u_yaw, u_pitch, u_tan, u_aspect, u_heading;
varying vec2 v_ndc;
const float PI = 3.141592653589793;
void main() {
  // camera space: x right, y up, z forward
  vec3 d = normalize(vec3(v_ndc.x * u_tan * u_aspect, v_ndc.y * u_tan, 1.0));
  float cp = cos(u_pitch), sp = sin(u_pitch);
  d = vec3(d.x, d.y * cp + d.z * sp, -d.y * sp + d.z * cp);
  // world: x east, y up, z north; yaw turns clockwise seen from above
  float cy = cos(u_yaw), sy = sin(u_yaw);
  vec3 w = vec3(d.x * cy + d.z * sy, d.y, -d.x * sy + d.z * cy);
  float bearing = atan(w.x, w.z);
  float elev = asin(clamp(w.y, -1.0, 1.0));
  float u = 0.5 + (bearing - u_heading) / (2.0 * PI);
  gl_FragColor = texture2D(u_img, vec2(fract(u), 0.5 - elev / PI));
}`;

  const RAD = Math.PI / 180;

  class TwinPano {
    constructor(canvas) {
      this.canvas = canvas;
      this.yaw = 0;
      this.pitch = 0;
      this.fov = 75; // vertical field of view, degrees
      this.heading = 0;
      this.loaded = false;
      this.url = null;
      this.onview = null;
      const gl = canvas.getContext("webgl", { preserveDrawingBuffer: true, antialias: false });
      if (!gl) throw new Error("WebGL is not available for the panorama view");
      this.gl = gl;
      const prog = gl.createProgram();
      for (const [type, src] of [[gl.VERTEX_SHADER, VERT], [gl.FRAGMENT_SHADER, FRAG]]) {
        const sh = gl.createShader(type);
        gl.shaderSource(sh, src);
        gl.compileShader(sh);
        if (!gl.getShaderParameter(sh, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(sh));
        gl.attachShader(prog, sh);
      }
      gl.linkProgram(prog);
      if (!gl.getProgramParameter(prog, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(prog));
      gl.useProgram(prog);
      this.prog = prog;
      const buf = gl.createBuffer();
      gl.bindBuffer(gl.ARRAY_BUFFER, buf);
      gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, -1, 1, 1, 1]), gl.STATIC_DRAW);
      const loc = gl.getAttribLocation(prog, "a_pos");
      gl.enableVertexAttribArray(loc);
      gl.vertexAttribPointer(loc, 2, gl.FLOAT, false, 0, 0);
      this.tex = gl.createTexture();
      this.u = {};
      for (const n of ["u_img", "u_yaw", "u_pitch", "u_tan", "u_aspect", "u_heading"]) this.u[n] = gl.getUniformLocation(prog, n);
      this._interaction();
    }

    _interaction() {
      const c = this.canvas;
      let drag = null;
      c.addEventListener("pointerdown", (e) => { drag = { x: e.clientX, y: e.clientY, yaw: this.yaw, pitch: this.pitch }; c.setPointerCapture(e.pointerId); });
      c.addEventListener("pointermove", (e) => {
        if (!drag) return;
        const degPerPx = this.fov / Math.max(1, c.clientHeight);
        this.look(drag.yaw - (e.clientX - drag.x) * degPerPx, drag.pitch + (e.clientY - drag.y) * degPerPx);
      });
      const end = () => { drag = null; };
      c.addEventListener("pointerup", end);
      c.addEventListener("pointercancel", end);
      c.addEventListener("wheel", (e) => { e.preventDefault(); this.look(this.yaw, this.pitch, this.fov * Math.exp(e.deltaY * 0.001)); }, { passive: false });
    }

    /** Load an image and show it, centred on `headingDeg` (the bearing of the image's centre column). */
    async show(url, headingDeg) {
      this.loaded = false;
      this.url = url;
      const img = new Image();
      img.src = url;
      await img.decode();
      if (this.url !== url) return false; // another image was asked for meanwhile
      const gl = this.gl;
      gl.bindTexture(gl.TEXTURE_2D, this.tex);
      gl.pixelStorei(gl.UNPACK_FLIP_Y_WEBGL, false);
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGB, gl.RGB, gl.UNSIGNED_BYTE, img);
      const pot = (n) => (n & (n - 1)) === 0;
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, pot(img.width) && pot(img.height) ? gl.REPEAT : gl.CLAMP_TO_EDGE);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.LINEAR);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.LINEAR);
      this.heading = headingDeg;
      this.size = [img.width, img.height];
      this.loaded = true;
      this.draw();
      return true;
    }

    look(yawDeg, pitchDeg, fovDeg) {
      this.yaw = ((yawDeg % 360) + 360) % 360;
      this.pitch = Math.max(-89, Math.min(89, pitchDeg));
      if (fovDeg !== undefined) this.fov = Math.max(20, Math.min(110, fovDeg));
      this.draw();
      if (this.onview) this.onview(this.view());
    }

    view() { return { yaw: this.yaw, pitch: this.pitch, fov: this.fov }; }

    draw() {
      const gl = this.gl, c = this.canvas;
      const dpr = window.devicePixelRatio || 1;
      const w = Math.max(1, Math.round(c.clientWidth * dpr)), h = Math.max(1, Math.round(c.clientHeight * dpr));
      if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
      gl.viewport(0, 0, w, h);
      gl.clearColor(0.11, 0.14, 0.19, 1);
      gl.clear(gl.COLOR_BUFFER_BIT);
      if (!this.loaded) return;
      gl.uniform1i(this.u.u_img, 0);
      gl.uniform1f(this.u.u_yaw, this.yaw * RAD);
      gl.uniform1f(this.u.u_pitch, this.pitch * RAD);
      gl.uniform1f(this.u.u_tan, Math.tan(this.fov * RAD / 2));
      gl.uniform1f(this.u.u_aspect, w / h);
      gl.uniform1f(this.u.u_heading, this.heading * RAD);
      gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
    }
  }

  window.TwinPano = TwinPano;
})();
