/* RuhrTwin offline viewer: reads ../manifest.json of the release and shows its layers with CesiumJS.
 *
 * No Cesium ion, no CDN: CesiumJS is served from ./cesium/, base imagery and terrain come from the
 * release's own layers. URL parameters:
 *   layers=a,b            layers shown (default: all)
 *   cam=lon,lat,h,heading,pitch   camera (degrees, metres); default: framed on the data
 *   style=layer:preset,...        styling preset per layer
 *   lite=1                no globe/sky/atmosphere/fog/anti-aliasing (software rendering, tests)
 *   pano=<image_id>       open that panorama (internal view only)
 *   sun=YYYY-MM-DDTHH:MM  shadow study: sun light and shadows at that local time (Europe/Berlin)
 * Test hooks: window.twin = {ready, layers, pickAt(x, y), worldToWindow([x, y, z]), errors, viewer,
 *   panorama: {open(id), next(), prev(), close(), look(yaw, pitch, fov), state()},
 *   sun: {set(date, time, on), state(), berlinToUtc(date, time)}}.
 */
(function () {
  "use strict";

  const params = new URLSearchParams(window.location.search);
  const LITE = params.get("lite") === "1";
  const MANIFEST_URL = "../manifest.json";
  const BACKGROUND = "#1d2330";

  // ---- palettes and class tables: viewer/palettes.json, written from pipeline/styles/palettes.py --------
  // (change classes, building function groups, GRZ classes, point classification per scheme with noise
  // flags). One definition shared with the tiles' baked colours, the QGIS styles and the report.
  const PALETTES_URL = "palettes.json";
  let PAL = { change: { classes: [] }, building_function: { classes: [] }, classification: {}, noise: {},
    classification_other: [], roof_type: { classes: [] }, lod_source: { classes: [] }, surface: { classes: [] } };
  const PALETTE = [
    "#e07b39", "#3974e0", "#4caf50", "#e0c339", "#9c27b0", "#00acc1", "#ef5350", "#8d6e63",
    "#7cb342", "#5c6bc0", "#ffa726", "#26a69a", "#ec407a", "#78909c", "#d4e157", "#ab47bc",
  ];
  const GRZ_ALPHA = 0.6; // the parcels overlay lies on the terrain: translucent, so the orthophoto shows
  const RAMP = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"]; // viridis stops

  // property-name candidates, first match wins (case-insensitive)
  const NAMES = {
    classification: ["classification", "class", "classification_code"],
    intensity: ["intensity"],
    height: ["height", "roof_height", "measured_height", "height_roof", "hoehe", "h_roof", "roof_p75"],
    function: ["funktion_gruppe", "function", "funktion", "gebaeudefunktion", "building_function", "gfkzshh"],
    change: ["change", "change_class", "change_type", "change_status"],
    quality: ["quality", "quality_flag", "qualityflag", "flag"],
    roof_type: ["roof_type", "rooftype", "dachform"],
    source: ["lod_source"],
    oid: ["oid", "gml_id", "id"],
  };

  // ---- state and test hooks --------------------------------------------------------------------------
  let resolveReady;
  const ready = new Promise((resolve) => { resolveReady = resolve; });
  const state = { manifest: null, viewer: null, layers: [], frame: null, measuring: false, measure: [] };
  const errors = [];
  window.twin = {
    ready, layers: state.layers, errors, viewer: null,
    pickAt: (x, y) => pickAt(new Cesium.Cartesian2(x, y)),
    worldToWindow: (xyz) => {
      const c = Cesium.SceneTransforms.worldToWindowCoordinates(
        state.viewer.scene, new Cesium.Cartesian3(xyz[0], xyz[1], xyz[2]));
      return c ? [c.x, c.y] : null;
    },
    setPreset: (name, preset) => setPreset(findLayer(name), preset),
    setVisible: (name, show) => setVisible(findLayer(name), show),
    setClassVisible: (name, code, show) => setClassVisible(findLayer(name), code, show),
    classes: (name) => {
      const l = findLayer(name);
      if (!l || l.kind !== "pointcloud") return null;
      const { codes, names, counts, noise, scheme } = classNames(l);
      return { scheme, classes: codes.map((c) => ({ code: c, name: names[c], count: counts[c] ?? null,
        noise: noise[c], shown: !(l.hiddenClasses || new Set()).has(c) })) };
    },
  };

  function $(id) { return document.getElementById(id); }
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c);
    return e;
  }
  function status(msg) { $("status").textContent = msg; }
  function fail(msg, err) {
    errors.push(msg);
    console.error(msg, err || "");
  }
  function findLayer(name) { return state.layers.find((l) => l.name === name); }
  function releaseUrl(rel) { return new URL("../" + rel, window.location.href).href; }
  function pick(names, available) {
    const lower = new Map(available.map((a) => [a.toLowerCase(), a]));
    for (const n of names) if (lower.has(n)) return lower.get(n);
    return undefined;
  }
  function fmt(v) {
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(3).replace(/\.?0+$/, "");
    if (v === undefined || v === null) return "";
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }
  function hashColour(value) {
    const s = String(value);
    let h = 2166136261;
    for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 16777619); }
    return PALETTE[(h >>> 0) % PALETTE.length];
  }
  function rampColour(t) {
    t = Math.min(1, Math.max(0, t)) * (RAMP.length - 1);
    const i = Math.min(RAMP.length - 2, Math.floor(t));
    return Cesium.Color.lerp(Cesium.Color.fromCssColorString(RAMP[i]),
      Cesium.Color.fromCssColorString(RAMP[i + 1]), t - i, new Cesium.Color());
  }
  const srgbToLinear = (x) => (x <= 0.04045 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4));
  function glslColour(css) { // sRGB css colour -> linear vec3 literal (material colours are linear)
    const c = Cesium.Color.fromCssColorString(css);
    const lin = srgbToLinear;
    return `vec3(${lin(c.red).toFixed(5)}, ${lin(c.green).toFixed(5)}, ${lin(c.blue).toFixed(5)})`;
  }
  /** CesiumJS applies a 3D Tiles style colour to glTF content as a *linear* colour (and encodes the frame
   * as sRGB), so a palette's sRGB colour handed over as is shows lighter and paler than the palette (e.g.
   * "raised" #1f77b4 as #55a9cd). Every style colour of the page passes here: its sRGB value is turned
   * into the linear one, so the screen shows the palette colour (times the scene's light). */
  function linearStyle(style) {
    if (!style || !style.color || typeof style.color.evaluateColor !== "function") return style;
    const inner = style.color;
    style.color = {
      evaluateColor(feature, result) {
        const c = inner.evaluateColor(feature, result);
        if (!c) return c;
        c.red = srgbToLinear(c.red); c.green = srgbToLinear(c.green); c.blue = srgbToLinear(c.blue);
        return c;
      },
    };
    return style;
  }

  // ---- reading tile metadata (property names) straight from the first content --------------------------
  async function fetchJson(url) {
    const r = await fetch(url, { cache: "no-cache" });
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
    return r.json();
  }
  function firstContentUri(tile) {
    const stack = [tile];
    while (stack.length) {
      const t = stack.shift();
      const c = t.content || (t.contents && t.contents[0]);
      if (c && (c.uri || c.url)) return c.uri || c.url;
      for (const ch of t.children || []) stack.push(ch);
    }
    return undefined;
  }
  function parseContentHeader(buf) {
    const dv = new DataView(buf);
    const magic = String.fromCharCode(...new Uint8Array(buf, 0, 4));
    const td = new TextDecoder();
    if (magic === "glTF") {
      const jlen = dv.getUint32(12, true);
      return { format: "glb", gltf: JSON.parse(td.decode(new Uint8Array(buf, 20, jlen))) };
    }
    if (magic === "pnts" || magic === "b3dm") {
      const ftJson = dv.getUint32(12, true), ftBin = dv.getUint32(16, true), btJson = dv.getUint32(20, true);
      const bt = btJson ? JSON.parse(td.decode(new Uint8Array(buf, 28 + ftJson + ftBin, btJson))) : {};
      return { format: magic, batchTable: bt };
    }
    return { format: "unknown" };
  }
  /** {tileset, format, className, properties: {name: classProperty}, statistics} of a tileset. */
  async function inspectTileset(url, depth = 0) {
    const ts = await fetchJson(url);
    const info = { tileset: ts, format: undefined, properties: {}, className: undefined, schemaId: undefined };
    let uri = firstContentUri(ts.root || {});
    if (!uri) return info;
    uri = uri.replace(/\{level\}|\{x\}|\{y\}|\{z\}/g, "0");
    const contentUrl = new URL(uri, url).href;
    if (/\.json(\?|$)/.test(uri) && depth < 4) {
      const inner = await inspectTileset(contentUrl, depth + 1);
      inner.tileset = ts;
      return inner;
    }
    const r = await fetch(contentUrl);
    if (!r.ok) return info;
    const head = parseContentHeader(await r.arrayBuffer());
    info.format = head.format;
    if (head.format === "glb") {
      const ext = (head.gltf.extensions || {}).EXT_structural_metadata || {};
      const schema = ext.schema || {};
      info.schemaId = schema.id;
      info.enums = schema.enums || {};
      const owner = (ext.propertyAttributes || [])[0] || (ext.propertyTables || [])[0];
      if (owner && schema.classes && schema.classes[owner.class]) {
        info.className = owner.class;
        const cls = schema.classes[owner.class].properties || {};
        for (const name of Object.keys(owner.properties || {})) info.properties[name] = cls[name] || {};
      }
      info.propertyAttributes = (ext.propertyAttributes || []).length > 0;
      // buildings: the per-feature property table (the owner above may be the surface property attribute)
      info.tableProperties = {};
      const table = (ext.propertyTables || [])[0];
      if (table && schema.classes && schema.classes[table.class]) {
        const cls = schema.classes[table.class].properties || {};
        for (const name of Object.keys(cls)) info.tableProperties[name] = cls[name] || {};
      }
      // LoD2 surfaces (roof / wall / ground): a property attribute whose enum is the surface type
      for (const pa of ext.propertyAttributes || []) {
        const cls = ((schema.classes || {})[pa.class] || {}).properties || {};
        for (const name of Object.keys(pa.properties || {})) {
          if ((cls[name] || {}).enumType === "surface_type" || name === "surface") info.surfaceProp = name;
        }
      }
      info.vertexColours = (head.gltf.meshes || []).some((m) => (m.primitives || []).some((p) =>
        (p.attributes || {}).COLOR_0 !== undefined));
      // CesiumJS 1.145 fails every CustomShader on primitives whose EXT_mesh_features feature ids have
      // no property table (CustomShaderPipelineStage reads propertyTables[undefined].class).
      info.shaderSafe = !(head.gltf.meshes || []).some((m) => (m.primitives || []).some((p) =>
        (((p.extensions || {}).EXT_mesh_features || {}).featureIds || []).some((f) => f.propertyTable === undefined)));
    } else if (head.batchTable) {
      for (const name of Object.keys(head.batchTable)) info.properties[name] = {};
    }
    return info;
  }

  // ---- styling presets ---------------------------------------------------------------------------------
  /** The classes of a point layer: scheme from `stats.class_scheme`, classes present (with counts) from
   * `stats.classes`, names from the scheme's table (AdV: German names), then the tiles' enum, then
   * `stats.class_names`; colours and noise flags from the palette. */
  function classNames(layer) {
    const stats = layer.entry.stats || {};
    const scheme = (stats.class_scheme || "").toLowerCase();
    const table = new Map(((PAL.classification || {})[scheme] || []).map((c) => [Number(c.code), c]));
    const enumNames = {};
    const en = layer.info && layer.info.enums && layer.info.enums.classification;
    for (const v of (en && en.values) || []) enumNames[v.value] = v.name;
    const counts = {};
    for (const [k, v] of Object.entries(stats.classes || {})) if (!Number.isNaN(Number(k))) counts[Number(k)] = v;
    let codes = Object.keys(counts).map(Number);
    if (!codes.length) codes = Object.keys(enumNames).map(Number);
    if (!codes.length) codes = [...table.keys()];
    codes.sort((a, b) => a - b);
    const other = PAL.classification_other && PAL.classification_other.length ? PAL.classification_other : PALETTE;
    const noiseCodes = new Set(((PAL.noise || {})[scheme] || []).map(Number));
    const names = {}, colours = {}, noise = {};
    for (const c of codes) {
      const t = table.get(c);
      names[c] = (t && t.name) || enumNames[c] || (stats.class_names || {})[c] || `class ${c}`;
      colours[c] = (t && t.color) || other[c % other.length];
      noise[c] = t ? !!t.noise : noiseCodes.has(c);
    }
    const label = scheme ? scheme.toUpperCase() : "scheme unknown";
    return { codes, names, colours, noise, counts, label, scheme };
  }

  /** GLSL that discards the points of the classes switched off in the legend (noise by default). */
  function classFilterGlsl(layer) {
    const p = layer.classProp;
    const hidden = [...(layer.hiddenClasses || [])];
    if (!p || !hidden.length) return "";
    return `float twinCls = float(fsInput.metadata.${p});
              if (${hidden.map((c) => `twinCls == ${Number(c)}.0`).join(" || ")}) discard;`;
  }

  function heightRange(layer) {
    const stats = layer.entry.stats || {};
    if (Number.isFinite(stats.z_min) && Number.isFinite(stats.z_max)) return [stats.z_min, stats.z_max];
    const box = ((layer.info && layer.info.tileset.root) || {}).boundingVolume;
    if (box && box.box) {
      const b = box.box;
      const hz = Math.abs(b[11]) + Math.abs(b[5]) + Math.abs(b[8]);
      return [b[2] - hz, b[2] + hz];
    }
    return [0, 100];
  }

  function frameUniforms() {
    const f = state.frame;
    const o = new Cesium.Cartesian3(...f.origin_ecef);
    const lon = Cesium.Math.toRadians(f.lon), lat = Cesium.Math.toRadians(f.lat);
    const up = new Cesium.Cartesian3(Math.cos(lat) * Math.cos(lon), Math.cos(lat) * Math.sin(lon), Math.sin(lat));
    return {
      u_origin: { type: Cesium.UniformType.VEC3, value: o },
      u_up: { type: Cesium.UniformType.VEC3, value: up },
    };
  }

  const RAMP_GLSL = `
    vec3 twinRamp(float t) {
      t = clamp(t, 0.0, 1.0) * 4.0;
      vec3 c0 = ${glslColour(RAMP[0])}; vec3 c1 = ${glslColour(RAMP[1])}; vec3 c2 = ${glslColour(RAMP[2])};
      vec3 c3 = ${glslColour(RAMP[3])}; vec3 c4 = ${glslColour(RAMP[4])};
      if (t < 1.0) return mix(c0, c1, t);
      if (t < 2.0) return mix(c1, c2, t - 1.0);
      if (t < 3.0) return mix(c2, c3, t - 2.0);
      return mix(c3, c4, t - 3.0);
    }`;

  function pointShader(layer, preset) {
    const props = Object.keys(layer.info ? layer.info.properties : {});
    if (preset === "height") {
      const [lo, hi] = heightRange(layer);
      return {
        shader: new Cesium.CustomShader({
          uniforms: Object.assign(frameUniforms(), {
            u_range: { type: Cesium.UniformType.VEC2, value: new Cesium.Cartesian2(lo, Math.max(hi, lo + 1)) },
          }),
          fragmentShaderText: `${RAMP_GLSL}
            void fragmentMain(FragmentInput fsInput, inout czm_modelMaterial material) {
              ${classFilterGlsl(layer)}
              float h = dot(fsInput.attributes.positionWC - u_origin, u_up);
              material.diffuse = twinRamp((h - u_range.x) / (u_range.y - u_range.x));
            }`,
        }),
        legend: { type: "ramp", title: "height (m, project frame ≈ DHHN2016)", min: lo, max: hi },
      };
    }
    if (preset === "intensity") {
      const p = pick(NAMES.intensity, props);
      const st = (layer.entry.stats || {}).intensity || {};
      const lo = Number.isFinite(st.min) ? st.min : 0;
      const hi = Number.isFinite(st.max) ? st.max : 65535;
      return {
        shader: new Cesium.CustomShader({
          uniforms: { u_range: { type: Cesium.UniformType.VEC2, value: new Cesium.Cartesian2(lo, Math.max(hi, lo + 1)) } },
          fragmentShaderText: `
            void fragmentMain(FragmentInput fsInput, inout czm_modelMaterial material) {
              ${classFilterGlsl(layer)}
              float v = clamp((float(fsInput.metadata.${p}) - u_range.x) / (u_range.y - u_range.x), 0.0, 1.0);
              material.diffuse = vec3(pow(v, 2.2));
            }`,
        }),
        legend: { type: "ramp", title: `intensity (${p})`, min: lo, max: hi, colours: ["#000000", "#ffffff"] },
      };
    }
    if (preset === "classification") {
      const p = layer.classProp;
      const { codes, colours, label } = classNames(layer);
      const branches = codes.map((c) => `if (c == ${c}.0) col = ${glslColour(colours[c])};`);
      return {
        shader: new Cesium.CustomShader({
          fragmentShaderText: `
            void fragmentMain(FragmentInput fsInput, inout czm_modelMaterial material) {
              ${classFilterGlsl(layer)}
              float c = float(fsInput.metadata.${p});
              vec3 col = vec3(0.5);
              ${branches.join("\n              else ")}
              material.diffuse = col;
            }`,
        }),
        legend: { type: "pointclasses", title: `classification (${label})`, swatches: true },
      };
    }
    const filter = classFilterGlsl(layer);
    const shader = filter ? new Cesium.CustomShader({
      fragmentShaderText: `
            void fragmentMain(FragmentInput fsInput, inout czm_modelMaterial material) {
              ${filter}
            }`,
    }) : undefined;
    return { shader, legend: { type: "text", title: "colour", text: "RGB from the survey / orthophoto" } };
  }

  function pointPresets(layer) {
    const props = Object.keys(layer.info ? layer.info.properties : {});
    const out = ["rgb"];
    if (layer.info && layer.info.format === "glb" && !layer.info.shaderSafe) {
      console.warn(`layer ${layer.name}: tiles have feature ids without a property table; CesiumJS cannot ` +
        "apply custom shaders to them, so only the RGB preset is offered");
      return out;
    }
    const meta = layer.info && layer.info.format === "glb" && layer.info.propertyAttributes;
    if (meta && pick(NAMES.classification, props)) out.push("classification");
    if (meta && pick(NAMES.intensity, props)) out.push("intensity");
    if (layer.info && layer.info.format === "glb") out.push("height");
    return out;
  }

  // Feature (building-like) styles: categorical presets use a JS colour function per feature.
  // Semantic colours for known values; anything else gets a palette colour not yet used in this legend.
  const KNOWN_COLOURS = {
    ok: "#4caf50", good: "#4caf50", few_points: "#ffa726", vegetation_over_roof: "#7cb342",
    fallback_height: "#ef5350", fallback: "#ef5350", no_points: "#ef5350", estimate: "#ffd54f",
    vegetation_suspected: "#7cb342", fallback_floors: "#ffa726", fallback_default: "#ef5350", "(none)": "#9e9e9e",
  };
  /** value -> colour of a palette concept ("change", "building_function") from palettes.json. */
  function paletteMap(concept) {
    const out = {};
    for (const c of ((PAL[concept] || {}).classes || [])) out[String(c.value)] = c.color;
    return out;
  }
  function categoryColour(seen, key) {
    const known = KNOWN_COLOURS[key.toLowerCase()];
    if (known) return known;
    const used = new Set(seen.values());
    const start = PALETTE.indexOf(hashColour(key));
    for (let k = 0; k < PALETTE.length; k++) {
      const c = PALETTE[(start + k) % PALETTE.length];
      if (!used.has(c)) return c;
    }
    return hashColour(key);
  }

  function categoricalStyle(layer, prop, title, fixed) {
    const seen = layer.categories[prop] || (layer.categories[prop] = new Map());
    const style = new Cesium.Cesium3DTileStyle();
    style.color = {
      evaluateColor(feature, result) {
        const v = feature.getProperty(prop);
        const key = v === undefined || v === null || v === "" ? "(none)" : String(v);
        if (!seen.has(key)) { seen.set(key, (fixed && fixed[key]) || categoryColour(seen, key)); scheduleLegend(layer); }
        return Cesium.Color.fromCssColorString(seen.get(key), result);
      },
    };
    return { style, legend: { type: "categories", title: `${title} (${prop})`, map: seen } };
  }

  function featureStyle(layer, preset) {
    const props = layer.featureProps;
    if (preset === "style.json" && layer.styleJson) {
      return {
        style: new Cesium.Cesium3DTileStyle(layer.styleJson),
        legend: legendFromStyle(layer.styleJson, layer.entry.style),
      };
    }
    if (preset === "height") {
      const p = pick(NAMES.height, props);
      const st = (layer.entry.stats || {}).height || {};
      const lo = Number.isFinite(st.min) ? st.min : 0;
      const hi = Number.isFinite(st.max) ? st.max : 40;
      const style = new Cesium.Cesium3DTileStyle();
      style.color = {
        evaluateColor(feature, result) {
          const v = Number(feature.getProperty(p));
          const ok = Number.isFinite(v) && v > -9998; // -9999 = noData of the buildings layer
          return Cesium.Color.clone(ok ? rampColour((v - lo) / (hi - lo)) : Cesium.Color.GRAY, result);
        },
      };
      return { style, legend: { type: "ramp", title: `height (${p}, m)`, min: lo, max: hi } };
    }
    if (preset === "change") return categoricalStyle(layer, pick(NAMES.change, props), preset, paletteMap("change"));
    if (preset === "function") {
      const p = pick(NAMES.function, props);
      const fixed = p === (PAL.building_function || {}).property ? paletteMap("building_function") : undefined;
      return categoricalStyle(layer, p, preset, fixed);
    }
    if (preset === "quality") return categoricalStyle(layer, pick(NAMES.quality, props), preset);
    if (preset === "roof_type") return roofTypeStyle(layer, pick(NAMES.roof_type, props), pick(NAMES.source, props));
    if (preset === "source") return paletteStyle(layer, "lod_source", pick(NAMES.source, props), "model source");
    if (preset === "surfaces") return surfaceStyle(layer);
    if (preset === "grz") return grzStyle(layer, pick([(PAL.grz || {}).property || "grz"], props));
    return { style: undefined, legend: null };
  }

  // ---- building styles of the LoD2 model: roof type, model source, surfaces (palettes.json) ------------
  // Colours and labels come from the palette; the legend lists the values present (the layer's manifest
  // stats where they exist, else the features drawn so far), in palette order.
  function paletteStyle(layer, concept, prop, title, options) {
    const pal = PAL[concept] || { classes: [] };
    const colours = new Map(pal.classes.map((c) => [String(c.value), c.color]));
    const labels = new Map(pal.classes.map((c) => [String(c.value), c.label]));
    const none = (options && options.none) || { label: "(none)", color: pal.other || "#ffffff" };
    const isNone = (options && options.isNone) || (() => false);
    const seen = new Set((options && options.present) || []);
    const style = new Cesium.Cesium3DTileStyle();
    style.color = {
      evaluateColor(feature, result) {
        const v = feature.getProperty(prop);
        const key = v === undefined || v === null || v === "" || isNone(feature) ? "" : String(v);
        if (!seen.has(key)) { seen.add(key); scheduleLegend(layer); }
        return Cesium.Color.fromCssColorString(colours.get(key) || none.color, result);
      },
    };
    const order = [...colours.keys()];
    const legend = {
      type: "palette", title: `${title} (${prop})`, property: prop,
      items: () => [
        ...order.filter((k) => seen.has(k)).map((k) => [k, labels.get(k), colours.get(k)]),
        ...[...seen].filter((k) => k && !colours.has(k)).sort().map((k) => [k, k, none.color]),
        ...(seen.has("") ? [["", none.label, none.color]] : []),
      ],
    };
    return { style, legend };
  }
  /** Parcels by land-use class where they have one (palettes.json `grz.land_use`: streets, paths and
   * squares in the traffic colour, water), the others by GRZ class (`grz`: upper bounds, labels, colours; the
   * colours the parcels tiles bake), translucent so the terrain and buildings show through; the legend lists
   * the classes drawn. The parcel edges are lines in the tiles, drawn as they are. */
  function grzStyle(layer, prop) {
    const pal = PAL.grz || { classes: [], no_value: "#aaaaaa" };
    const classes = pal.classes || [];
    const landUse = pal.land_use || [];
    const luProp = pick([pal.land_use_property || "land_use"], layer.featureProps);
    const seen = new Set();
    const classOf = (v) => {
      const x = v === undefined || v === null || v === "" ? NaN : Number(v);
      if (!Number.isFinite(x) || x === -9999) return -1; // -9999: the tiles' no-data value
      const k = classes.findIndex((c) => c.upper === null || x < c.upper);
      return k < 0 ? classes.length - 1 : k;
    };
    const useOf = (f) => {
      if (luProp === undefined) return -1;
      const v = f.getProperty(luProp);
      return landUse.findIndex((c) => c.value === v);
    };
    const style = new Cesium.Cesium3DTileStyle();
    style.color = {
      evaluateColor(feature, result) {
        const u = useOf(feature);
        const key = u >= 0 ? `lu:${u}` : classOf(feature.getProperty(prop));
        if (!seen.has(key)) { seen.add(key); scheduleLegend(layer); }
        const css = u >= 0 ? landUse[u].color : key < 0 ? pal.no_value : classes[key].color;
        const c = Cesium.Color.fromCssColorString(css, result);
        c.alpha = GRZ_ALPHA;
        return c;
      },
    };
    const legend = {
      type: "palette", title: `land use, else GRZ (${prop})`, property: prop,
      items: () => [
        ...landUse.map((c, u) => [`lu:${u}`, c.label, c.color]).filter(([k]) => seen.has(k)),
        ...classes.map((c, k) => [String(k), c.label, c.color]).filter(([k]) => seen.has(Number(k))),
        ...(seen.has(-1) ? [["", "no value", pal.no_value]] : []),
      ],
    };
    return { style, legend };
  }
  function roofTypeStyle(layer, prop, sourceProp) {
    const pal = PAL.roof_type || {};
    const lod2 = ((layer.entry.stats || {}).lod2) || {};
    const present = Object.keys(lod2.roof_types || {});
    if (lod2.lod1_fallback) present.push("");
    return paletteStyle(layer, "roof_type", prop, "roof type", {
      none: pal.none || { label: "no LoD2 roof", color: "#f0f0f0" },
      isNone: (f) => sourceProp !== undefined && f.getProperty(sourceProp) === "lod1_fallback",
      present,
    });
  }
  /** Roofs, walls and ground in their palette colours, read per vertex from the `surface` property
   * attribute (EXT_structural_metadata, the tiles' `_SURFACE`); features keep no style colour. */
  function surfaceStyle(layer) {
    const p = layer.info && layer.info.surfaceProp;
    const classes = (PAL.surface || {}).classes || [];
    const branches = classes.map((c) => `if (s == ${Number(c.value)}.0) material.diffuse = ${glslColour(c.color)};`);
    const shader = new Cesium.CustomShader({
      fragmentShaderText: `
            void fragmentMain(FragmentInput fsInput, inout czm_modelMaterial material) {
              float s = float(fsInput.metadata.${p});
              ${branches.join("\n              else ")}
            }`,
    });
    return {
      style: undefined, shader,
      legend: { type: "palette", title: `surfaces (${p})`, property: p,
        items: () => classes.map((c) => [String(c.value), c.label, c.color]) },
    };
  }

  const PRESET_LABELS = {
    grz: "by land use, else GRZ class", function: "by function", roof_type: "by roof type", source: "by model source",
    surfaces: "surfaces (roof / wall / ground)",
  };

  function featurePresets(layer) {
    const out = [];
    if (layer.styleJson) out.push("style.json");
    if (pick([(PAL.grz || {}).property || "grz"], layer.featureProps)) out.push("grz");
    for (const p of ["function", "height", "change", "quality"]) if (pick(NAMES[p], layer.featureProps)) out.push(p);
    for (const p of ["roof_type", "source"]) if (pick(NAMES[p], layer.featureProps)) out.push(p);
    if (layer.info && layer.info.surfaceProp && layer.info.shaderSafe) out.push("surfaces");

    out.push("plain");
    return out;
  }

  function legendFromStyle(style, title) {
    const cond = style && style.color && style.color.conditions;
    if (!Array.isArray(cond)) return { type: "text", title: title || "style", text: "3D Tiles style" };
    const items = cond.map(([expr, colour]) => {
      const m = /'([^']*)'\s*\)?\s*$/.exec(String(colour)) || /"([^"]*)"/.exec(String(colour));
      const css = m ? m[1] : "#ffffff";
      let lab = String(expr);
      const eq = /===?\s*['"]([^'"]*)['"]/.exec(lab);
      if (lab === "true") lab = "other"; else if (eq) lab = eq[1];
      return [lab, css];
    });
    const metaTitle = style.meta && style.meta.title ? String(style.meta.title).replace(/^'(.*)'$/, "$1") : "";
    return { type: "classes", title: metaTitle || title || "style", items };
  }

  // ---- legend ------------------------------------------------------------------------------------------
  let legendTimer = null;
  function scheduleLegend() {
    if (legendTimer) return;
    legendTimer = setTimeout(() => { legendTimer = null; renderLegend(); }, 200);
  }
  function renderLegend() {
    const box = $("legend");
    box.replaceChildren();
    for (const layer of state.layers) {
      if (!layer.show || !layer.legend) continue;
      const lg = layer.legend;
      const g = el("div", { class: "legend-group", "data-layer": layer.name });
      g.append(el("div", { class: "legend-title", text: `${layer.name}: ${lg.title}` }));
      if (lg.type === "ramp") {
        const cols = lg.colours || RAMP;
        g.append(el("div", { class: "ramp", style: `background: linear-gradient(to right, ${cols.join(", ")})` }));
        g.append(el("div", { class: "ramp-labels" }, el("span", { text: fmt(lg.min) }), el("span", { text: fmt(lg.max) })));
      } else if (lg.type === "classes" || lg.type === "categories") {
        const items = lg.type === "classes" ? lg.items : [...lg.map.entries()].sort();
        for (const [label, css] of items) {
          g.append(el("div", { class: "legend-item" }, el("span", { class: "swatch", style: `background:${css}` }), el("span", { text: label })));
        }
      } else if (lg.type === "palette") {
        for (const [value, label, css] of lg.items()) {
          g.append(el("div", { class: "legend-item", "data-value": value },
            el("span", { class: "swatch", style: `background:${css}` }), el("span", { text: label })));
        }
      } else if (lg.text) {
        g.append(el("div", { class: "muted", text: lg.text }));
      }
      if (layer.classProp) g.append(classFilterBox(layer, lg.type === "pointclasses"));
      box.append(g);
    }
  }

  /** The classes present in a point layer (scheme names, counts), each with a switch; noise starts off. */
  function classFilterBox(layer, swatches) {
    const { codes, names, colours, counts, noise, label } = classNames(layer);
    const box = el("div", { class: "class-filter", "data-scheme": label });
    if (!swatches) box.append(el("div", { class: "muted", text: `classes (${label})` }));
    for (const c of codes) {
      const cb = el("input", { type: "checkbox", "data-class": String(c), "aria-label": `show class ${c}` });
      cb.checked = !layer.hiddenClasses.has(c);
      cb.addEventListener("change", () => setClassVisible(layer, c, cb.checked));
      const n = counts[c] !== undefined ? ` (${Number(counts[c]).toLocaleString("en")})` : "";
      const row = el("label", { class: "legend-item", "data-class": String(c) }, cb);
      if (swatches) row.append(el("span", { class: "swatch", style: `background:${colours[c]}` }));
      row.append(el("span", { class: "class-name", text: `${c} ${names[c]}${noise[c] ? " (noise)" : ""}` }),
        el("span", { class: "muted", text: n }));
      box.append(row);
    }
    return box;
  }
  function setClassVisible(layer, code, show) {
    if (!layer || !layer.classProp) return;
    if (show) layer.hiddenClasses.delete(Number(code)); else layer.hiddenClasses.add(Number(code));
    setPreset(layer, layer.preset);
  }

  // ---- layer panel -------------------------------------------------------------------------------------
  function setVisible(layer, show) {
    if (!layer) return;
    layer.show = show;
    if (layer.tileset) layer.tileset.show = show;
    if (layer.dataSource) layer.dataSource.show = show;
    if (layer.imagery) layer.imagery.show = show;
    if (layer.checkbox) layer.checkbox.checked = show;
    updateGlobe();
    renderLegend();
    updateUrl();
    state.viewer.scene.requestRender();
  }

  function setPreset(layer, preset) {
    if (!layer || !layer.presets.includes(preset)) return;
    layer.preset = preset;
    if (layer.select) layer.select.value = preset;
    try {
      if (layer.kind === "pointcloud") {
        const { shader, legend } = pointShader(layer, preset);
        layer.tileset.customShader = shader;
        layer.legend = legend;
      } else if (layer.tileset) {
        const { style, legend, shader } = featureStyle(layer, preset);
        // tiles that carry their own colour (COLOR_0, e.g. the change classes) and the palette presets of
        // the buildings (roof type, model source): a style colour replaces the tile's colour, never
        // multiplies onto it
        const replace = (layer.info && layer.info.vertexColours) || preset === "roof_type" || preset === "source";
        layer.tileset.colorBlendMode = replace
          ? Cesium.Cesium3DTileColorBlendMode.REPLACE : Cesium.Cesium3DTileColorBlendMode.HIGHLIGHT;
        layer.tileset.customShader = shader;
        layer.tileset.style = linearStyle(style);
        layer.legend = legend;
      }
    } catch (e) {
      fail(`layer ${layer.name}: cannot apply preset ${preset}: ${e.message}`, e);
    }
    renderLegend();
    updateUrl();
    state.viewer.scene.requestRender();
  }

  function addLayerRow(layer) {
    const renderable = layer.tileset || layer.imagery || layer.dataSource || layer.error;
    if (!renderable) {
      // nothing to draw (e.g. the report): link its page if it has one, else leave it out of the panel
      const page = (layer.entry.files || []).find((f) => /\.html$/.test(f));
      if (!page) return;
      $("layers").append(el("div", { class: "layer", "data-layer": layer.name },
        el("a", { href: releaseUrl(page), target: "_blank", rel: "noopener", text: layer.name }),
        el("span", { class: "kind", text: layer.kind })));
      return;
    }
    const box = el("input", { type: "checkbox", id: `layer-${layer.name}` });
    box.checked = layer.show;
    box.addEventListener("change", () => setVisible(layer, box.checked));
    layer.checkbox = box;
    const row = el("div", { class: "layer", "data-layer": layer.name },
      box, el("label", { for: `layer-${layer.name}`, text: layer.name }), el("span", { class: "kind", text: layer.kind }));
    if (layer.entry.access === "internal") row.append(el("span", { class: "internal", text: "internal" }));
    if (layer.presets && layer.presets.length > 1) {
      const sel = el("select", { "aria-label": `style of ${layer.name}` });
      for (const p of layer.presets) sel.append(el("option", { value: p, text: PRESET_LABELS[p] || p }));
      sel.value = layer.preset;
      sel.addEventListener("change", () => setPreset(layer, sel.value));
      layer.select = sel;
      row.append(el("br"), sel);
    }
    if (layer.error) row.append(el("span", { class: "error", text: layer.error }));
    $("layers").append(row);
  }

  function updateGlobe() {
    const globe = state.viewer.scene.globe;
    if (!globe) return;
    // A terrain tileset (textured with the orthophoto) replaces the globe surface while it is shown.
    const terrainShown = state.layers.some((l) => l.kind === "terrain" && l.tileset && l.show);
    globe.show = !terrainShown;
  }

  // ---- URL state ---------------------------------------------------------------------------------------
  let urlTimer = null;
  function updateUrl() {
    if (!state.ready) return;
    clearTimeout(urlTimer);
    urlTimer = setTimeout(() => {
      const p = new URLSearchParams(window.location.search);
      p.set("layers", state.layers.filter((l) => l.show).map((l) => l.name).join(","));
      const styles = state.layers.filter((l) => l.preset).map((l) => `${l.name}:${l.preset}`);
      if (styles.length) p.set("style", styles.join(",")); else p.delete("style");
      p.set("cam", cameraParam());
      if (state.pano && state.pano.current) p.set("pano", state.pano.current.id); else p.delete("pano");
      if (state.sun && state.sun.on) p.set("sun", `${state.sun.date}T${hhmm(state.sun.minutes)}`); else p.delete("sun");
      window.history.replaceState(null, "", `${window.location.pathname}?${p.toString().replace(/%2C/g, ",").replace(/%3A/g, ":")}`);
    }, 150);
  }
  function cameraParam() {
    const cam = state.viewer.camera;
    const c = cam.positionCartographic;
    const d = (r) => Cesium.Math.toDegrees(r);
    return [d(c.longitude).toFixed(7), d(c.latitude).toFixed(7), c.height.toFixed(1),
      d(cam.heading).toFixed(1), d(cam.pitch).toFixed(1)].join(",");
  }
  function applyCameraParam(text) {
    const v = (text || "").split(",").map(Number);
    if (v.length < 3 || v.slice(0, 3).some((x) => !Number.isFinite(x))) return false;
    state.viewer.camera.setView({
      destination: Cesium.Cartesian3.fromDegrees(v[0], v[1], v[2]),
      orientation: {
        heading: Cesium.Math.toRadians(Number.isFinite(v[3]) ? v[3] : 0),
        pitch: Cesium.Math.toRadians(Number.isFinite(v[4]) ? v[4] : -45),
        roll: 0,
      },
    });
    return true;
  }
  function frameAll() {
    const spheres = state.layers.filter((l) => l.tileset && l.show).map((l) => l.tileset.boundingSphere);
    if (!spheres.length) {
      spheres.push(...state.layers.filter((l) => l.tileset).map((l) => l.tileset.boundingSphere));
    }
    let bs;
    if (spheres.length) {
      bs = Cesium.BoundingSphere.fromBoundingSpheres(spheres);
    } else if (state.frame) {
      bs = new Cesium.BoundingSphere(new Cesium.Cartesian3(...state.frame.origin_ecef), 500);
    } else {
      return;
    }
    const cam = state.viewer.camera;
    cam.viewBoundingSphere(bs, new Cesium.HeadingPitchRange(0, Cesium.Math.toRadians(-40), Math.max(bs.radius * 1.6, 50)));
    cam.lookAtTransform(Cesium.Matrix4.IDENTITY);
  }

  /** Ellipsoidal height of the data's ground: lowest point-cloud (else tileset) level in the frame. */
  function groundHeight() {
    if (!state.frame) return undefined;
    const origin = Cesium.Cartographic.fromCartesian(new Cesium.Cartesian3(...state.frame.origin_ecef));
    const withBox = state.layers.filter((l) => l.tileset && l.info);
    const pts = withBox.filter((l) => l.kind === "pointcloud");
    const use = pts.length ? pts : withBox;
    if (!use.length) return undefined;
    const lows = use.map((l) => {
      const st = l.entry.stats || {};
      return Number.isFinite(st.ground_z) ? st.ground_z : heightRange(l)[0];
    });
    return origin.height + Math.min(...lows);
  }

  // ---- picking and measuring ---------------------------------------------------------------------------
  function showInfo(title, rows) {
    $("infoTitle").textContent = title;
    const body = $("infoTable").tBodies[0];
    body.replaceChildren();
    for (const [k, v, label] of rows) {
      body.append(el("tr", { "data-prop": k }, el("th", { text: label || k }), el("td", { text: fmt(v) })));
    }
    $("info").hidden = false;
  }

  function positionRows(cartesian) {
    if (!cartesian) return [];
    const c = Cesium.Cartographic.fromCartesian(cartesian);
    const rows = [
      ["lon", Cesium.Math.toDegrees(c.longitude).toFixed(7)],
      ["lat", Cesium.Math.toDegrees(c.latitude).toFixed(7)],
      ["ellipsoidal height (absolute, ETRS89 ellipsoid, m)", c.height.toFixed(2)],
    ];
    if (state.frame) rows.push(["height above the frame origin (relative, m)", frameHeight(cartesian).toFixed(2)]);
    return rows;
  }
  function frameHeight(cartesian) {
    const u = frameUniforms();
    return Cesium.Cartesian3.dot(Cesium.Cartesian3.subtract(cartesian, u.u_origin.value, new Cesium.Cartesian3()), u.u_up.value);
  }
  function layerOfPrimitive(prim) { return state.layers.find((l) => l.tileset && l.tileset === prim); }

  // ---- point attributes by nearest point in the tile content (glTF POINTS + EXT_structural_metadata) ----
  const COMPONENT = {
    5120: [Int8Array, 127], 5121: [Uint8Array, 255], 5122: [Int16Array, 32767], 5123: [Uint16Array, 65535],
    5125: [Uint32Array, 4294967295], 5126: [Float32Array, 1],
  };
  const WIDTH = { SCALAR: 1, VEC2: 2, VEC3: 3, VEC4: 4, MAT4: 16 };
  const contentCache = new Map();

  function readAccessor(gltf, bin, index) {
    const acc = gltf.accessors[index];
    const view = gltf.bufferViews[acc.bufferView];
    if (view.extensions && view.extensions.EXT_meshopt_compression) throw new Error("meshopt view not decoded");
    const [Type, max] = COMPONENT[acc.componentType];
    const width = WIDTH[acc.type];
    const size = Type.BYTES_PER_ELEMENT;
    const stride = view.byteStride || size * width;
    const start = bin.byteOffset + (view.byteOffset || 0) + (acc.byteOffset || 0);
    const dv = new DataView(bin.buffer, start, stride * (acc.count - 1) + size * width);
    const getter = { 1: "getUint8", 2: "getUint16", 4: "getUint32" }[size];
    const signed = Type === Int8Array || Type === Int16Array;
    const out = new Float64Array(acc.count * width);
    for (let i = 0; i < acc.count; i++) {
      for (let k = 0; k < width; k++) {
        const off = i * stride + k * size;
        let v;
        if (Type === Float32Array) v = dv.getFloat32(off, true);
        else if (signed) v = size === 1 ? dv.getInt8(off) : dv.getInt16(off, true);
        else v = dv[getter](off, true);
        if (acc.normalized && Type !== Float32Array) v = Math.max(v / max, -1);
        out[i * width + k] = v;
      }
    }
    return { values: out, width };
  }

  function nodeMatrix(node) {
    if (node.matrix) return Cesium.Matrix4.fromColumnMajorArray(node.matrix);
    const t = node.translation ? Cesium.Cartesian3.fromArray(node.translation) : Cesium.Cartesian3.ZERO;
    const r = node.rotation ? new Cesium.Quaternion(...node.rotation) : Cesium.Quaternion.IDENTITY;
    const sc = node.scale ? Cesium.Cartesian3.fromArray(node.scale) : new Cesium.Cartesian3(1, 1, 1);
    return Cesium.Matrix4.fromTranslationQuaternionRotationScale(t, r, sc);
  }

  /** A pnts tile (3D Tiles 1.0): float32 POSITION relative to RTC_CENTER (z-up), RGB, batch table. */
  function pntsGroup(buf) {
    const dv = new DataView(buf);
    const ftJ = dv.getUint32(12, true), ftB = dv.getUint32(16, true), btJ = dv.getUint32(20, true);
    const td = new TextDecoder();
    const ft = JSON.parse(td.decode(new Uint8Array(buf, 28, ftJ)));
    const ftBin = 28 + ftJ;
    const bt = btJ ? JSON.parse(td.decode(new Uint8Array(buf, ftBin + ftB, btJ))) : {};
    const btBin = ftBin + ftB + btJ;
    const n = ft.POINTS_LENGTH;
    if (!ft.POSITION) throw new Error("pnts without float POSITION");
    const positions = Float64Array.from(new Float32Array(buf.slice(ftBin + ft.POSITION.byteOffset, ftBin + ft.POSITION.byteOffset + 12 * n)));
    const rtc = ft.RTC_CENTER || [0, 0, 0];
    const attrs = {};
    if (ft.RGB) {
      const rgb = new Uint8Array(buf, ftBin + ft.RGB.byteOffset, 3 * n);
      const lin = (x) => { x /= 255; return x <= 0.04045 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); };
      attrs.colour = { values: Float64Array.from(rgb, lin), width: 3, colour: true };
    }
    const TYPES = { UNSIGNED_BYTE: Uint8Array, UNSIGNED_SHORT: Uint16Array, UNSIGNED_INT: Uint32Array,
      FLOAT: Float32Array, DOUBLE: Float64Array, BYTE: Int8Array, SHORT: Int16Array, INT: Int32Array };
    for (const [name, ref] of Object.entries(bt)) {
      if (!ref || ref.byteOffset === undefined || !TYPES[ref.componentType]) continue;
      const T = TYPES[ref.componentType];
      const width = WIDTH[ref.type || "SCALAR"] || 1;
      const start = btBin + ref.byteOffset;
      attrs[name] = { values: Float64Array.from(new T(buf.slice(start, start + T.BYTES_PER_ELEMENT * width * n))), width };
    }
    return { matrix: Cesium.Matrix4.fromTranslation(Cesium.Cartesian3.fromArray(rtc)), positions, attrs, zUp: true };
  }

  // EXT_meshopt_compression (the default point tiles): the compressed views are decoded by meshoptimizer's
  // decoder (copied beside this page from node_modules/meshoptimizer by the viewer build) into a new binary
  // chunk (the original bytes followed by the decoded views) before any accessor is read.
  let meshoptDecoder = null;
  async function decodeMeshoptViews(gltf, bin) {
    const views = gltf.bufferViews || [];
    const plan = [];
    let total = bin.byteLength;
    for (const v of views) {
      const ext = v.extensions && v.extensions.EXT_meshopt_compression;
      if (!ext) continue;
      total += -total & 3;
      plan.push([v, ext, total]);
      total += ext.count * ext.byteStride;
    }
    if (!plan.length) return bin;
    if (!meshoptDecoder) {
      meshoptDecoder = import("./meshopt_decoder.module.js").then(async (m) => { await m.MeshoptDecoder.ready; return m.MeshoptDecoder; });
      meshoptDecoder.catch(() => { meshoptDecoder = null; });
    }
    const dec = await meshoptDecoder;
    const out = new Uint8Array(total);
    out.set(bin);
    for (const [v, ext, off] of plan) {
      if ((ext.buffer ?? 0) !== 0) throw new Error("meshopt stream outside the GLB's binary chunk");
      const len = ext.count * ext.byteStride;
      const src = new Uint8Array(bin.buffer, bin.byteOffset + (ext.byteOffset || 0), ext.byteLength);
      dec.decodeGltfBuffer(out.subarray(off, off + len), ext.count, ext.byteStride, src, ext.mode, ext.filter || "NONE");
      Object.assign(v, { buffer: 0, byteOffset: off, byteLength: len, byteStride: ext.byteStride });
      delete v.extensions.EXT_meshopt_compression;
    }
    return out;
  }

  async function loadPointContent(url) {
    if (contentCache.has(url)) return contentCache.get(url);
    const job = (async () => {
      const buf = await (await fetch(url)).arrayBuffer();
      const dv = new DataView(buf);
      const magic = String.fromCharCode(...new Uint8Array(buf, 0, 4));
      if (magic === "pnts") return [pntsGroup(buf)];
      if (magic !== "glTF") throw new Error("not a point tile (glTF or pnts)");
      const jlen = dv.getUint32(12, true);
      const gltf = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 20, jlen)));
      const blen = dv.getUint32(20 + jlen, true);
      const bin = await decodeMeshoptViews(gltf, new Uint8Array(buf, 28 + jlen, blen));
      const meta = (gltf.extensions || {}).EXT_structural_metadata || {};
      const groups = [];
      const visit = (ni, parent) => {
        const node = gltf.nodes[ni];
        const m = Cesium.Matrix4.multiply(parent, nodeMatrix(node), new Cesium.Matrix4());
        const mesh = node.mesh !== undefined ? gltf.meshes[node.mesh] : null;
        for (const prim of mesh ? mesh.primitives : []) {
          if ((prim.mode ?? 4) !== 0) continue;
          const pos = readAccessor(gltf, bin, prim.attributes.POSITION).values;
          const attrs = {};
          const pa = ((prim.extensions || {}).EXT_structural_metadata || {}).propertyAttributes || [];
          for (const idx of pa) {
            const def = (meta.propertyAttributes || [])[idx];
            const cls = ((meta.schema || {}).classes || {})[def.class] || {};
            for (const [name, p] of Object.entries(def.properties || {})) {
              if (prim.attributes[p.attribute] === undefined) continue;
              const a = readAccessor(gltf, bin, prim.attributes[p.attribute]);
              const cp = (cls.properties || {})[name] || {};
              attrs[name] = { values: a.values, width: a.width, offset: p.offset ?? cp.offset, scale: p.scale ?? cp.scale };
            }
          }
          if (prim.attributes.COLOR_0 !== undefined) {
            const a = readAccessor(gltf, bin, prim.attributes.COLOR_0);
            attrs.colour = { values: a.values, width: a.width, colour: true };
          }
          groups.push({ matrix: m, positions: pos, attrs });
        }
        for (const ch of node.children || []) visit(ch, m);
      };
      const scene = (gltf.scenes || [])[gltf.scene || 0] || { nodes: [] };
      for (const ni of scene.nodes) visit(ni, Cesium.Matrix4.IDENTITY);
      return groups;
    })();
    contentCache.set(url, job);
    job.catch(() => contentCache.delete(url));
    return job;
  }

  const Y_UP_TO_Z_UP = Cesium.Matrix4.fromRotationTranslation(Cesium.Matrix3.fromRotationX(Cesium.Math.PI_OVER_TWO));
  const PICK_RADIUS_PX = 4; // a point counts as under the cursor when drawn within this many CSS pixels
  const OCCLUSION_M = 1.5; // points this far behind the front-most candidate are hidden by it

  function pointAttributes(g, i) {
    const properties = {};
    for (const [name, a] of Object.entries(g.attrs)) {
      const vals = Array.from(a.values.subarray(i * a.width, (i + 1) * a.width));
      if (a.colour) {
        const srgb = (x) => Math.round(255 * (x <= 0.0031308 ? 12.92 * x : 1.055 * Math.pow(x, 1 / 2.4) - 0.055));
        properties.colour = vals.slice(0, 3).map(srgb).join(", ");
        continue;
      }
      const tr = vals.map((v) => (v * (a.scale ?? 1)) + (a.offset ?? 0));
      properties[name] = tr.length === 1 ? tr[0] : tr;
    }
    return properties;
  }

  /** The point drawn under the cursor: every point of the layer's tiles rendered in the last frame is
   * projected to the screen; of those within PICK_RADIUS_PX of the cursor, the nearest to the cursor among
   * those not hidden behind the front-most one. Exact attributes of that point, or null when none is there. */
  async function pointUnderCursor(layer, pos) {
    const scene = state.viewer.scene;
    const canvas = scene.canvas;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    const cam = scene.camera;
    const vp = Cesium.Matrix4.multiply(cam.frustum.projectionMatrix, cam.viewMatrix, new Cesium.Matrix4());
    const r2 = PICK_RADIUS_PX * PICK_RADIUS_PX;
    const cands = [];
    const tiles = [...(layer.visibleTiles || [])];
    for (const tile of tiles) {
      const content = tile.content;
      if (!content || !content.url) continue;
      let groups;
      try {
        groups = await loadPointContent(new URL(content.url, window.location.href).href);
      } catch (e) {
        throw new Error(`${e.message || e}`);
      }
      const tileM = Cesium.Matrix4.multiply(tile.computedTransform, Y_UP_TO_Z_UP, new Cesium.Matrix4());
      for (const g of groups) {
        const model = Cesium.Matrix4.multiply(g.zUp ? tile.computedTransform : tileM, g.matrix, new Cesium.Matrix4());
        const m = Cesium.Matrix4.multiply(vp, model, new Cesium.Matrix4());
        const p = g.positions;
        for (let i = 0, k = 0; i < p.length; i += 3, k++) {
          const x = p[i], y = p[i + 1], z = p[i + 2];
          const cw = m[3] * x + m[7] * y + m[11] * z + m[15];
          if (cw <= 0) continue;
          const sx = ((m[0] * x + m[4] * y + m[8] * z + m[12]) / cw * 0.5 + 0.5) * w;
          const sy = (0.5 - (m[1] * x + m[5] * y + m[9] * z + m[13]) / cw * 0.5) * h;
          const dx = sx - pos.x, dy = sy - pos.y;
          if (dx * dx + dy * dy > r2) continue;
          if (layer.classProp && g.attrs[layer.classProp] && layer.hiddenClasses.has(g.attrs[layer.classProp].values[k])) continue;
          cands.push({ depth: cw, i: k, g, model, screen: Math.sqrt(dx * dx + dy * dy) });
        }
      }
    }
    if (!cands.length) return null;
    // the front-most point occludes what lies more than OCCLUSION_M behind it; among the points at its
    // depth (a surface seen at an angle) the one nearest to the cursor is the one drawn there
    const front = Math.min(...cands.map((c) => c.depth));
    let best = null;
    for (const c of cands) {
      if (c.depth <= front + OCCLUSION_M && (!best || c.screen < best.screen)) best = c;
    }
    const q = best.g.positions;
    const world = Cesium.Matrix4.multiplyByPoint(best.model,
      new Cesium.Cartesian3(q[3 * best.i], q[3 * best.i + 1], q[3 * best.i + 2]), new Cesium.Cartesian3());
    return { properties: pointAttributes(best.g, best.i), world, screenDistance: best.screen };
  }

  // ---- highlighting the picked object -----------------------------------------------------------------
  const HIGHLIGHT = Cesium.Color.fromCssColorString("#ffea00");
  function clearHighlight() {
    const hl = state.highlight;
    state.highlight = null;
    if (hl && hl.feature) {
      try { hl.feature.color = hl.colour; } catch (e) { /* the tile was unloaded meanwhile */ }
    }
    if (hl && hl.entity) state.viewer.entities.remove(hl.entity);
  }
  function highlightFeature(feature) {
    clearHighlight();
    state.highlight = { feature, colour: Cesium.Color.clone(feature.color) };
    feature.color = HIGHLIGHT;
  }
  function highlightPoint(world) {
    clearHighlight();
    state.highlight = { entity: state.viewer.entities.add({ position: world, point: {
      pixelSize: 12, color: Cesium.Color.TRANSPARENT, outlineColor: HIGHLIGHT, outlineWidth: 2,
      disableDepthTestDistance: Number.POSITIVE_INFINITY } }) };
  }

  // Heights are labelled as absolute (a datum) or relative (above ground / a difference).
  const HEIGHT_LABELS = {
    height: "relative: roof above ground", h_old: "relative: above terrain, old epoch",
    h_new: "relative: above terrain, new epoch", dh: "relative: height change", height_p75: "relative: above terrain",
    roof_height: "absolute", base_height: "absolute", ground_height: "absolute",
    eave_height: "absolute", ridge_height: "absolute",
  };
  // LoD2 roof attributes of the buildings: what they are, with units
  const ROOF_LABELS = {
    roof_type: "roof type", roof_type_code: "roof type code (AdV)", roof_planes: "roof planes",
    roof_slope_mean: "mean roof slope (°)", roof_slope_max: "steepest roof plane (°)",
    roof_azimuth_main: "main roof azimuth (°, clockwise from north)",
    roof_planes_summary: "roof planes (slope°/azimuth°)", roof_rmse: "roof fit RMSE (m)",
    roof_n_points: "roof points in the fit", lod_source: "model source", lod2_fallback_reason: "LoD2 fallback reason",
  };
  /** Name of the release's vertical datum (its compound CRS), e.g. DHHN2016. */
  function verticalDatum() {
    const crs = String((state.manifest && state.manifest.crs) || "");
    if (/\+7837\b|DHHN2016/i.test(crs)) return "DHHN2016";
    if (/\+5783\b|DHHN92/i.test(crs)) return "DHHN92";
    return "";
  }
  function propLabel(layer, key) {
    const k = key.toLowerCase();
    const known = HEIGHT_LABELS[k];
    const desc = ((((layer && layer.info) || {}).tableProperties || {})[key]) || (((layer && layer.info) || {}).properties || {})[key];
    const d = desc && desc.description ? String(desc.description) : "";
    if (known === "absolute" || /normal height|DHHN|ellipsoidal/i.test(d)) {
      const datum = /DHHN/i.test(d) ? "DHHN2016" : verticalDatum();
      const what = k === "eave_height" ? "eave height" : k === "ridge_height" ? "ridge height" : key;
      return `${what} (absolute${datum ? ", " + datum : ""}, m)`;
    }
    if (known) return `${key} (${known}, m)`;
    if (ROOF_LABELS[k]) return ROOF_LABELS[k];
    return key;
  }
  /** Rows derived from a building's LoD2 attributes: the roof type's AdV names, the model source in words,
   * eave and ridge above the building's base (relative to ground). */
  function buildingRows(props) {
    const rows = [];
    const rt = props.roof_type;
    if (rt !== undefined && rt !== null && rt !== "") {
      const c = ((PAL.roof_type || {}).classes || []).find((x) => x.value === rt);
      rows.push(["roof_type_name", c ? `${c.de} / ${c.en} (AdV ${c.code})` : String(rt), "roof type (Dachform)"]);
    }
    const src = props.lod_source;
    if (src) {
      const c = ((PAL.lod_source || {}).classes || []).find((x) => x.value === src);
      rows.push(["lod_source_name", c ? c.label : String(src), "model"]);
    }
    const base = Number(props.base_height);
    for (const [key, what] of [["eave_height", "eave height"], ["ridge_height", "ridge height"]]) {
      const v = Number(props[key]);
      if (props[key] === undefined || props[key] === null || !Number.isFinite(v) || v <= -9998) continue;
      if (Number.isFinite(base) && base > -9998) {
        rows.push([`${key}_above_ground`, (v - base).toFixed(2), `${what} (relative to ground, above the base, m)`]);
      }
    }
    return rows;
  }

  async function pickAt(pos) {
    const scene = state.viewer.scene;
    const picked = scene.pick(pos);
    const where = scene.pickPositionSupported ? scene.pickPosition(pos) : undefined;
    let result = { kind: "none", properties: {}, position: where ? [where.x, where.y, where.z] : null };
    if (picked instanceof Cesium.Cesium3DTileFeature) {
      const layer = layerOfPrimitive(picked.tileset || picked.primitive);
      const ids = picked.getPropertyIds();
      const props = {};
      for (const id of ids) props[id] = picked.getProperty(id);
      const oidKey = pick(NAMES.oid, ids);
      const ordered = oidKey ? [[oidKey, props[oidKey]], ...ids.filter((i) => i !== oidKey).map((i) => [i, props[i]])]
        : ids.map((i) => [i, props[i]]);
      highlightFeature(picked);
      showInfo(`${layer ? layer.name : "feature"}${oidKey ? " " + props[oidKey] : ""}`,
        [...ordered.map(([k, v]) => [k, v, propLabel(layer, k)]), ...buildingRows(props), ...positionRows(where)]);
      result = { kind: "feature", layer: layer && layer.name, properties: props, position: result.position };
    } else if (picked && picked.id instanceof Cesium.Entity) {
      const ent = picked.id;
      const props = ent.properties ? ent.properties.getValue(Cesium.JulianDate.now()) : {};
      const layer = state.layers.find((l) => l.dataSource && l.dataSource.entities.contains(ent));
      const pos = ent.position ? ent.position.getValue(Cesium.JulianDate.now()) : where;
      showInfo(`${layer ? layer.name : "object"} ${props.image_id || ""}`.trim(), [...Object.entries(props), ...positionRows(pos)]);
      result = { kind: "entity", layer: layer && layer.name, properties: props, position: result.position };
      if (layer && layer.kind === "panoramas" && props.image) {
        result.panorama = props.image_id;
        openPanorama(layer, props.image_id).catch((e) => fail(`panorama ${props.image_id}: ${e.message || e}`, e));
      }
    } else if (picked && picked.primitive instanceof Cesium.Cesium3DTileset) {
      // a point: point clouds have no features and CesiumJS 1.145 picks metadata from property textures
      // only, so the point drawn under the cursor is found in the tiles' own content (exact attributes)
      const layer = layerOfPrimitive(picked.primitive);
      let found = null;
      let note;
      try {
        found = layer ? await pointUnderCursor(layer, pos) : null;
      } catch (e) {
        note = `attributes unavailable: ${e.message || e}`;
      }
      if (!found) {
        clearHighlight();
        showInfo(`${layer ? layer.name : "point"}: no point here`, [["note", note || "no point is drawn under the cursor"]]);
        return { kind: "none", layer: layer && layer.name, properties: {}, position: null };
      }
      const props = found.properties;
      const rows = Object.entries(props);
      const ck = layer.classProp || pick(NAMES.classification, Object.keys(props));
      if (ck !== undefined && props[ck] !== undefined) {
        const { names, label } = classNames(layer);
        rows.push(["class name", `${names[props[ck]] || "class " + props[ck]} (${label})`]);
      }
      highlightPoint(found.world);
      showInfo(`${layer.name}: point`, [...rows, ...positionRows(found.world)]);
      const w = found.world;
      result = { kind: "point", layer: layer.name, properties: props, position: [w.x, w.y, w.z] };
    } else {
      clearHighlight();
      $("info").hidden = true;
    }
    state.viewer.scene.requestRender();
    return result;
  }

  function measureClick(pos) {
    const scene = state.viewer.scene;
    const p = scene.pickPositionSupported ? scene.pickPosition(pos) : undefined;
    if (!p) { $("measure").textContent = "no surface under the cursor"; return null; }
    if (state.measure.length >= 2) clearMeasure();
    state.measure.push(p);
    const ents = state.viewer.entities;
    state.measureEntities.push(ents.add({ position: p, point: { pixelSize: 8, color: Cesium.Color.YELLOW, disableDepthTestDistance: Number.POSITIVE_INFINITY } }));
    if (state.measure.length === 1) { $("measure").textContent = "click the second point"; return null; }
    const [a, b] = state.measure;
    const d = Cesium.Cartesian3.distance(a, b);
    const dh = frameHeight(b) - frameHeight(a);
    const horiz = Math.sqrt(Math.max(d * d - dh * dh, 0));
    state.measureEntities.push(ents.add({
      polyline: { positions: [a, b], width: 2, material: Cesium.Color.YELLOW, depthFailMaterial: Cesium.Color.YELLOW.withAlpha(0.5) },
    }));
    const text = `distance ${d.toFixed(2)} m\nhorizontal ${horiz.toFixed(2)} m\nheight difference ${dh.toFixed(2)} m`;
    $("measure").textContent = text;
    scene.requestRender();
    return { distance: d, horizontal: horiz, height_difference: dh };
  }
  function clearMeasure() {
    for (const e of state.measureEntities || []) state.viewer.entities.remove(e);
    state.measureEntities = [];
    state.measure = [];
  }

  // ---- layers ------------------------------------------------------------------------------------------
  async function loadTilesetLayer(layer) {
    const url = releaseUrl(layer.entry.tileset);
    layer.info = await inspectTileset(url).catch((e) => { console.warn(`inspect ${url}`, e); return null; });
    const opts = {};
    if (layer.kind === "pointcloud") {
      opts.pointCloudShading = new Cesium.PointCloudShading({
        attenuation: true, eyeDomeLighting: true, maximumAttenuation: 4, geometricErrorScale: 1,
      });
    }
    layer.tileset = await Cesium.Cesium3DTileset.fromUrl(url, opts);
    layer.tileset.show = layer.show;
    if (layer.entry.style) {
      layer.styleJson = await fetchJson(releaseUrl(layer.entry.style)).catch((e) => {
        fail(`layer ${layer.name}: style ${layer.entry.style} unreadable: ${e.message}`);
        return null;
      });
    }
    if (layer.kind === "pointcloud") {
      layer.presets = pointPresets(layer);
      const props = Object.keys((layer.info && layer.info.properties) || {});
      const filterable = layer.info && layer.info.format === "glb" && layer.info.propertyAttributes && layer.info.shaderSafe;
      layer.classProp = filterable ? pick(NAMES.classification, props) : undefined;
      layer.hiddenClasses = new Set();
      if (layer.classProp) {
        const { codes, noise } = classNames(layer);
        for (const c of codes) if (noise[c]) layer.hiddenClasses.add(c);
      }
    } else {
      const tableProps = (layer.info && layer.info.tableProperties) || {};
      layer.featureProps = Object.keys(Object.keys(tableProps).length ? tableProps : (layer.info && layer.info.properties) || {});
      layer.presets = featurePresets(layer);
    }
  }

  async function loadImageryLayer(layer) {
    const files = layer.entry.files || [];
    const metaPath = files.find((f) => /imagery\.json$/.test(f)) || files.find((f) => /\.json$/.test(f)) || "imagery/imagery.json";
    const metaUrl = releaseUrl(metaPath);
    const meta = await fetchJson(metaUrl);
    const template = meta.tiles ? (Array.isArray(meta.tiles) ? meta.tiles[0] : meta.tiles) : meta.url || "xyz/{z}/{x}/{y}.png";
    const b = meta.bounds || meta.bbox;
    const opts = { url: new URL(template, metaUrl).href.replace(/%7B/g, "{").replace(/%7D/g, "}") };
    if (Array.isArray(b) && b.length === 4) opts.rectangle = Cesium.Rectangle.fromDegrees(b[0], b[1], b[2], b[3]);
    if (Number.isFinite(meta.minzoom)) opts.minimumLevel = meta.minzoom;
    if (Number.isFinite(meta.maxzoom)) opts.maximumLevel = meta.maxzoom;
    if (meta.attribution) opts.credit = meta.attribution;
    if (!state.viewer.scene.globe) { layer.error = "imagery needs the globe (off in lite mode)"; return; }
    layer.imagery = state.viewer.imageryLayers.addImageryProvider(new Cesium.UrlTemplateImageryProvider(opts), 0);
    layer.imagery.show = layer.show;
    layer.legend = { type: "text", title: "imagery", text: meta.title || "orthophoto of the release" };
  }

  // ---- panoramas: recording positions, and the 360° image at a click (panorama mode, pano.js) ----------
  const PANO_WITH_IMAGE = "#ffb300", PANO_POSITION_ONLY = "#9aa3b2";

  async function loadPanoramaLayer(layer) {
    const files = layer.entry.files || [];
    const path = files.find((f) => /\.geojson$|\.json$/.test(f));
    if (!path) { layer.error = "no GeoJSON file"; return; }
    const gj = await fetchJson(releaseUrl(path));
    // tracks: the recordings with an image, in their order along the track (`sequence`, else time)
    const byId = new Map();
    const tracks = new Map();
    for (const f of gj.features || []) {
      const p = f.properties || {};
      byId.set(p.image_id, f);
      if (!p.image) continue;
      const t = p.track ?? "";
      if (!tracks.has(t)) tracks.set(t, []);
      tracks.get(t).push(f);
    }
    for (const list of tracks.values()) {
      list.sort((a, b) => (a.properties.sequence ?? a.properties.time) - (b.properties.sequence ?? b.properties.time));
    }
    layer.panoramas = { byId, tracks };
    const ds = await Cesium.GeoJsonDataSource.load(gj);
    let withImage = 0;
    for (const ent of ds.entities.values) {
      const p = ent.properties ? ent.properties.getValue(Cesium.JulianDate.now()) : {};
      if (p.image) withImage += 1;
      ent.billboard = undefined;
      ent.point = new Cesium.PointGraphics({
        pixelSize: p.image ? 8 : 6, color: Cesium.Color.fromCssColorString(p.image ? PANO_WITH_IMAGE : PANO_POSITION_ONLY),
        outlineColor: Cesium.Color.BLACK, outlineWidth: 1, disableDepthTestDistance: 0,
      });
    }
    await state.viewer.dataSources.add(ds);
    ds.show = layer.show;
    layer.dataSource = ds;
    const items = [[`panorama (click: 360° view)`, PANO_WITH_IMAGE]];
    if (withImage < ds.entities.values.length) items.push(["recording position, no image", PANO_POSITION_ONLY]);
    layer.legend = { type: "classes", title: "panorama locations", items: withImage ? items : [["panorama", PANO_WITH_IMAGE]] };
  }

  function panoramaState() {
    const pano = state.pano;
    const cur = pano && pano.current;
    if (!cur) return { open: false };
    const p = cur.feature.properties;
    const v = pano.view.view();
    return {
      open: !$("pano").hidden, image_id: cur.id, image: p.image, heading: pano.view.heading,
      heading_delivered: p.heading, time: p.time, track: p.track ?? null, sequence: p.sequence ?? null,
      index: cur.index, count: cur.list.length, yaw: v.yaw, pitch: v.pitch, fov: v.fov,
      loaded: pano.view.loaded && pano.view.url === releaseUrl(p.image),
    };
  }

  function panoramaLabel() {
    const st = panoramaState();
    const t = Number.isFinite(st.time) ? ` · GPS time ${st.time.toFixed(1)}` : "";
    $("panoTitle").textContent = `${st.image_id}  (${st.index + 1} / ${st.count} along track ${st.track ?? "-"})${t}`;
    $("panoPrev").disabled = st.index <= 0;
    $("panoNext").disabled = st.index >= st.count - 1;
    panoramaCompass();
  }

  function panoramaCompass() {
    const st = panoramaState();
    if (!st.open) return;
    const names = ["N", "NE", "E", "SE", "S", "SW", "W", "NW"];
    const yaw = Math.round(st.yaw) % 360;
    $("panoHeading").textContent = `view ${yaw}° ${names[Math.round(yaw / 45) % 8]} · image centre (heading) ${st.heading.toFixed(1)}°`;
  }

  /** Open the panorama `id` of a panorama layer (stepping keeps the view's bearing; a new one faces its heading). */
  async function openPanorama(layer, id) {
    const f = layer.panoramas && layer.panoramas.byId.get(id);
    if (!f || !f.properties.image) throw new Error(`no image for panorama ${id}`);
    if (!state.pano) {
      state.pano = { view: new window.TwinPano($("panoCanvas")), current: null };
      state.pano.view.onview = () => panoramaCompass();
    }
    const pano = state.pano;
    const p = f.properties;
    const heading = Number.isFinite(p.heading_true) ? p.heading_true : p.heading;
    const list = layer.panoramas.tracks.get(p.track ?? "") || [f];
    const stepping = !$("pano").hidden && pano.current;
    pano.current = { layer, id, feature: f, list, index: list.indexOf(f) };
    $("pano").hidden = false;
    if (!stepping) pano.view.look(heading, 0, 75);
    panoramaLabel();
    const shown = await pano.view.show(releaseUrl(p.image), heading);
    if (shown) panoramaCompass();
    updateUrl();
    return panoramaState();
  }

  function stepPanorama(delta) {
    const cur = state.pano && state.pano.current;
    if (!cur) return Promise.resolve(panoramaState());
    const next = cur.list[cur.index + delta];
    if (!next) return Promise.resolve(panoramaState());
    return openPanorama(cur.layer, next.properties.image_id);
  }

  function closePanorama() {
    $("pano").hidden = true;
    if (state.pano) state.pano.current = null;
    updateUrl();
    if (state.viewer) state.viewer.scene.requestRender();
  }

  function findPanorama(id) {
    for (const l of state.layers) if (l.panoramas && l.panoramas.byId.has(id)) return l;
    return undefined;
  }

  // ---- sun and shadow study -------------------------------------------------------------------------------
  // Local time is Europe/Berlin: CET (UTC+1), summer time CEST (UTC+2) from the last Sunday of March to the
  // last Sunday of October, switching at 01:00 UTC (the EU rule, in force since 1996). The sun's position
  // for that instant comes from CesiumJS (the same computation its SunLight uses), and CesiumJS's own
  // cascaded shadow map draws the shadows.
  const SUN_DEFAULT_MINUTES = 12 * 60;
  function lastSundayUtc(year, month) { // month 0-based; 00:00 UTC of that month's last Sunday
    const last = new Date(Date.UTC(year, month + 1, 0));
    return Date.UTC(year, month, last.getUTCDate() - last.getUTCDay());
  }
  /** Minutes Europe/Berlin is ahead of UTC at the UTC instant `utcMs`. */
  function berlinOffset(utcMs) {
    const y = new Date(utcMs).getUTCFullYear();
    const start = lastSundayUtc(y, 2) + 3600e3, end = lastSundayUtc(y, 9) + 3600e3;
    return utcMs >= start && utcMs < end ? 120 : 60;
  }
  /** UTC milliseconds of `minutes` after local midnight of the local date "YYYY-MM-DD" (Europe/Berlin). */
  function berlinToUtc(date, minutes) {
    const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(date || "");
    if (!m || !Number.isFinite(minutes)) return NaN;
    const wall = Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), 0, minutes);
    const first = berlinOffset(wall - 60 * 60e3);
    const utc = wall - first * 60e3;
    return wall - berlinOffset(utc) * 60e3;
  }
  function berlinToday() {
    const now = Date.now();
    return new Date(now + berlinOffset(now) * 60e3).toISOString().slice(0, 10);
  }
  function hhmm(minutes) {
    return `${String(Math.floor(minutes / 60)).padStart(2, "0")}:${String(minutes % 60).padStart(2, "0")}`;
  }
  /** Sun elevation and azimuth (degrees, azimuth clockwise from true north) at the frame origin. */
  function sunPosition(time) {
    const icrf = Cesium.Simon1994PlanetaryPositions.computeSunPositionInEarthInertialFrame(time, new Cesium.Cartesian3());
    const rot = Cesium.Transforms.computeIcrfToFixedMatrix(time, new Cesium.Matrix3())
      || Cesium.Transforms.computeTemeToPseudoFixedMatrix(time, new Cesium.Matrix3());
    const sun = Cesium.Matrix3.multiplyByVector(rot, icrf, new Cesium.Cartesian3());
    const origin = state.frame ? new Cesium.Cartesian3(...state.frame.origin_ecef) : state.viewer.camera.positionWC;
    const toEnu = Cesium.Matrix4.inverseTransformation(Cesium.Transforms.eastNorthUpToFixedFrame(origin), new Cesium.Matrix4());
    const dir = Cesium.Matrix4.multiplyByPointAsVector(toEnu, Cesium.Cartesian3.subtract(sun, origin, new Cesium.Cartesian3()), new Cesium.Cartesian3());
    Cesium.Cartesian3.normalize(dir, dir);
    return {
      elevation: Cesium.Math.toDegrees(Math.asin(dir.z)),
      azimuth: (Cesium.Math.toDegrees(Math.atan2(dir.x, dir.y)) + 360) % 360,
    };
  }
  function sunState() {
    const s = state.sun;
    if (!s) return { on: false };
    const utc = berlinToUtc(s.date, s.minutes);
    const pos = Number.isFinite(utc) ? sunPosition(Cesium.JulianDate.fromDate(new Date(utc))) : { elevation: NaN, azimuth: NaN };
    return { on: s.on, date: s.date, time: hhmm(s.minutes), utc: Number.isFinite(utc) ? new Date(utc).toISOString() : null,
      utc_offset_minutes: Number.isFinite(utc) ? berlinOffset(utc) : null, shadows: state.viewer.shadows,
      elevation: pos.elevation, azimuth: pos.azimuth };
  }
  function sunLabel() {
    const st = sunState();
    const zone = st.utc_offset_minutes === 120 ? "CEST" : "CET";
    $("sunClock").textContent = `${st.time} ${zone}`;
    const dirs = ["N", "NE", "E", "SE", "S", "SW", "W", "NW"];
    let info = "";
    if (!st.utc) info = "pick a date";
    else if (st.elevation <= 0) info = `sun below the horizon (${st.elevation.toFixed(1)}°)${st.on ? ": no direct light" : ""}`;
    else info = `sun ${st.elevation.toFixed(1)}° high from ${Math.round(st.azimuth)}° ${dirs[Math.round(st.azimuth / 45) % 8]}`;
    $("sunInfo").textContent = st.on ? info : `${info} · shadows off (fixed light from above)`;
  }
  /** Put the clock, the light and the shadow map in the state of `state.sun`. */
  function applySun() {
    const s = state.sun, viewer = state.viewer, scene = viewer.scene;
    const utc = berlinToUtc(s.date, s.minutes);
    if (Number.isFinite(utc)) viewer.clock.currentTime = Cesium.JulianDate.fromDate(new Date(utc));
    viewer.clock.shouldAnimate = false;
    if (s.on) {
      scene.light = s.sunLight;
      viewer.shadows = true;
      const sm = scene.shadowMap;
      sm.softShadows = false;
      sm.darkness = 0.3;
      sm.size = 2048;
      sm.maximumDistance = 5000.0;
      // buildings, terrain and point tilesets cast and receive (CesiumJS's default for tilesets); the globe
      // (terrain without a terrain tileset) casts too, not only receives
      for (const l of state.layers) if (l.tileset) l.tileset.shadows = Cesium.ShadowMode.ENABLED;
      if (scene.globe) scene.globe.shadows = Cesium.ShadowMode.ENABLED;
    } else {
      scene.light = s.fixedLight;
      viewer.shadows = false;
    }
    // CesiumJS draws eye-dome-lit points in a pass of its own that receives no shadows: points are drawn
    // plain (still attenuated) while the shadow study is on
    for (const l of state.layers) {
      if (l.kind === "pointcloud" && l.tileset) l.tileset.pointCloudShading.eyeDomeLighting = !s.on;
    }
    $("shadowToggle").checked = s.on;
    $("sunDate").value = s.date;
    $("sunTime").value = String(s.minutes);
    sunLabel();
    scene.requestRender();
    updateUrl();
  }
  function setSun(date, minutes, on) {
    const s = state.sun;
    if (date !== undefined && date !== null && date !== "") s.date = date;
    if (Number.isFinite(minutes)) s.minutes = Math.min(1439, Math.max(0, Math.round(minutes)));
    if (on !== undefined) s.on = !!on;
    applySun();
  }
  function parseClock(text) { // "HH:MM" -> minutes after midnight
    const m = /^(\d{1,2}):(\d{2})$/.exec(String(text));
    return m ? Number(m[1]) * 60 + Number(m[2]) : NaN;
  }
  function initSun(scene) {
    state.sun = { on: false, date: berlinToday(), minutes: SUN_DEFAULT_MINUTES, fixedLight: scene.light, sunLight: new Cesium.SunLight() };
    const wanted = /^(\d{4}-\d{2}-\d{2})T(\d{1,2}:\d{2})$/.exec(params.get("sun") || "");
    if (wanted) Object.assign(state.sun, { on: true, date: wanted[1], minutes: parseClock(wanted[2]) });
    $("shadowToggle").addEventListener("change", () => setSun(undefined, undefined, $("shadowToggle").checked));
    $("sunDate").addEventListener("change", () => setSun($("sunDate").value, undefined, true));
    $("sunTime").addEventListener("input", () => setSun(undefined, Number($("sunTime").value), true));
    applySun();
    const afterFrames = (n) => new Promise((resolve) => {
      let left = n;
      const remove = scene.postRender.addEventListener(() => {
        left -= 1;
        if (left <= 0) { remove(); resolve(sunState()); } else scene.requestRender();
      });
      scene.requestRender();
    });
    window.twin.sun = {
      set: (date, time, on = true) => { setSun(date, typeof time === "number" ? time : parseClock(time), on); return afterFrames(3); },
      state: sunState,
      berlinToUtc: (date, time) => new Date(berlinToUtc(date, typeof time === "number" ? time : parseClock(time))).toISOString(),
    };
  }

  function defaultPreset(layer) {
    const wanted = styleParam[layer.name];
    if (wanted && layer.presets.includes(wanted)) return wanted;
    if (layer.kind === "pointcloud") return "rgb";
    return layer.presets[0];
  }

  const styleParam = Object.fromEntries((params.get("style") || "").split(",").filter(Boolean).map((s) => s.split(":")));

  async function main() {
    Cesium.Ion.defaultAccessToken = "";
    let manifest;
    try {
      manifest = await fetchJson(MANIFEST_URL);
    } catch (e) {
      fail(`cannot read the release manifest ${MANIFEST_URL}: ${e.message}`, e);
      status("no manifest.json next to viewer/: open this page from a served release (twin view)");
      resolveReady({ ok: false, errors });
      return;
    }
    state.manifest = manifest;
    state.frame = manifest.frame || null;
    try {
      PAL = Object.assign(PAL, await fetchJson(PALETTES_URL));
    } catch (e) {
      fail(`cannot read ${PALETTES_URL} (class names and colours): ${e.message}`, e);
    }
    document.title = `RuhrTwin: ${manifest.name || "release"}`;
    $("title").textContent = manifest.name || "RuhrTwin";
    $("subtitle").textContent = `release ${manifest.build_id || ""}`;

    const viewer = new Cesium.Viewer("cesiumContainer", {
      baseLayer: false, baseLayerPicker: false, geocoder: false, homeButton: false, sceneModePicker: false,
      navigationHelpButton: false, animation: false, timeline: false, fullscreenButton: false,
      infoBox: false, selectionIndicator: false, scene3DOnly: true,
      terrainProvider: LITE ? undefined : new Cesium.EllipsoidTerrainProvider(),
      globe: LITE ? false : undefined,
      skyBox: LITE ? false : undefined,
      skyAtmosphere: LITE ? false : undefined,
      msaaSamples: LITE ? 1 : 4,
      requestRenderMode: true,
      maximumRenderTimeChange: Infinity,
      contextOptions: { webgl: { antialias: !LITE, preserveDrawingBuffer: true } },
    });
    state.viewer = viewer;
    window.twin.viewer = viewer;
    const scene = viewer.scene;
    scene.backgroundColor = Cesium.Color.fromCssColorString(BACKGROUND);
    // A fixed light from above (slightly from the south-east) instead of the sun at the clock's time: roofs
    // show their true colour at any hour (class colours are compared with the legend), walls are shaded.
    // The shadow study (panel "Sun and shadow", initSun) swaps in the sun at a chosen date and time.
    if (manifest.frame) {
      const f = manifest.frame;
      const lon = Cesium.Math.toRadians(f.lon), lat = Cesium.Math.toRadians(f.lat);
      const up = new Cesium.Cartesian3(Math.cos(lat) * Math.cos(lon), Math.cos(lat) * Math.sin(lon), Math.sin(lat));
      const east = new Cesium.Cartesian3(-Math.sin(lon), Math.cos(lon), 0);
      const north = Cesium.Cartesian3.cross(up, east, new Cesium.Cartesian3());
      const dir = new Cesium.Cartesian3();
      for (const [v, k] of [[up, -1.0], [east, 0.25], [north, 0.35]]) {
        Cesium.Cartesian3.add(dir, Cesium.Cartesian3.multiplyByScalar(v, k, new Cesium.Cartesian3()), dir);
      }
      scene.light = new Cesium.DirectionalLight({ direction: Cesium.Cartesian3.normalize(dir, dir), intensity: 2.0 });
    }
    if (LITE) {
      scene.fog.enabled = false;
      if (scene.sun) scene.sun.show = false;
      if (scene.moon) scene.moon.show = false;
      scene.postProcessStages.fxaa.enabled = false;
    } else if (scene.globe) {
      scene.globe.baseColor = Cesium.Color.fromCssColorString("#2b3140");
    }

    // Overlays and the change map draw over the buildings and terrain: off until the planner asks for them.
    const DEFAULT_HIDDEN = ["overlay", "change"];
    const wantLayers = params.get("layers");
    const wanted = wantLayers === null ? null : new Set(wantLayers.split(",").filter(Boolean));
    const entries = (manifest.layers || []).filter((e) => e.kind !== "viewer");
    for (const entry of entries) {
      const layer = {
        name: entry.name, kind: entry.kind, entry, show: wanted ? wanted.has(entry.name) : DEFAULT_HIDDEN.indexOf(entry.kind) < 0,
        presets: [], preset: undefined, legend: null, categories: {}, featureProps: [],
      };
      state.layers.push(layer);
    }
    status("loading layers…");
    await Promise.all(state.layers.map(async (layer) => {
      try {
        if (layer.entry.tileset) await loadTilesetLayer(layer);
        else if (layer.kind === "imagery") await loadImageryLayer(layer);
        else if (layer.kind === "panoramas") await loadPanoramaLayer(layer);
      } catch (e) {
        layer.error = `failed to load: ${e.message || e}`;
        fail(`layer ${layer.name}: ${layer.error}`, e);
      }
    }));

    // Without a terrain tileset the imagery drapes a flat surface at the data's ground level (not the
    // bare ellipsoid, which lies ~100 m below the Ruhr and would shift the orthophoto against the data).
    if (scene.globe && !state.layers.some((l) => l.kind === "terrain" && l.tileset)) {
      const ground = groundHeight();
      if (ground !== undefined) {
        viewer.terrainProvider = new Cesium.CustomHeightmapTerrainProvider({
          width: 16, height: 16, callback: () => new Float32Array(256).fill(ground),
        });
      }
    }

    // Camera first, then add the tilesets: "all tiles loaded" then refers to this view.
    if (!applyCameraParam(params.get("cam"))) frameAll();
    const tilesets = state.layers.filter((l) => l.tileset);
    const loadedAfterCamera = new Set();
    for (const l of tilesets) {
      // the tiles drawn in the last frame (point picking searches their points)
      l.visibleTiles = new Set();
      l.visibleFrame = -1;
      l.tileset.tileVisible.addEventListener((tile) => {
        const f = scene.frameState.frameNumber;
        if (f !== l.visibleFrame) { l.visibleFrame = f; l.visibleTiles = new Set(); }
        l.visibleTiles.add(tile);
      });
      l.tileset.tileFailed.addEventListener((e) => fail(`layer ${l.name}: tile ${e.url} failed: ${e.message}`));
      l.tileset.allTilesLoaded.addEventListener(() => { loadedAfterCamera.add(l.tileset); scene.requestRender(); });
      scene.primitives.add(l.tileset);
    }
    for (const l of state.layers) {
      if (l.presets.length) setPreset(l, defaultPreset(l));
      addLayerRow(l);
    }
    updateGlobe();
    renderLegend();
    initSun(scene);

    // twin.ready: every shown tileset reported allTilesLoaded after the camera was set and selects >= 1 tile.
    let frames = 0;
    const t0 = performance.now();
    const removeCheck = scene.postRender.addEventListener(() => {
      frames += 1;
      // A tileset counts as loaded once it fired allTilesLoaded after the camera was set, or, when it
      // needed no request from this view at all (out of view, or below its geometricError), once it has
      // stayed idle for a few frames; and at least one tile must be selected overall.
      const shown = tilesets.filter((l) => l.show);
      const pending = shown.filter((l) => !(l.tileset.tilesLoaded && (loadedAfterCamera.has(l.tileset) || frames > 4)));
      const selected = shown.reduce((n, l) => n + l.tileset.statistics.selected, 0);
      const globeBusy = false; // the globe (imagery) keeps refining; readiness is about the tilesets
      if (frames > 1 && pending.length === 0 && (selected > 0 || shown.length === 0)) {
        removeCheck();
        state.ready = true;
        const secs = ((performance.now() - t0) / 1000).toFixed(1);
        status(`${state.layers.length} layers, ready in ${secs} s${LITE ? " (lite)" : ""}`);
        updateUrl();
        resolveReady({
          ok: errors.length === 0, errors: errors.slice(), frames,
          layers: state.layers.map((l) => ({ name: l.name, kind: l.kind, show: l.show, preset: l.preset, error: l.error || null,
            selected: l.tileset ? l.tileset.statistics.selected : null })),
        });
      } else {
        status(`loading tiles… (${[...pending.map((l) => l.name), ...(globeBusy ? ["globe"] : [])].join(", ")})`);
        setTimeout(() => scene.requestRender(), 50);
      }
    });
    // requestRenderMode renders on change only; keep rendering while the globe is still refining
    scene.postRender.addEventListener(() => {
      if (scene.globe && scene.globe.show && !scene.globe.tilesLoaded) setTimeout(() => scene.requestRender(), 100);
    });
    scene.requestRender();

    // interaction
    const handler = new Cesium.ScreenSpaceEventHandler(scene.canvas);
    handler.setInputAction((ev) => {
      if (state.measuring) measureClick(ev.position);
      else pickAt(ev.position).catch((e) => console.warn("pick failed", e));
    }, Cesium.ScreenSpaceEventType.LEFT_CLICK);
    viewer.camera.moveEnd.addEventListener(updateUrl);
    $("infoClose").addEventListener("click", () => { $("info").hidden = true; });
    $("homeBtn").addEventListener("click", () => { frameAll(); scene.requestRender(); updateUrl(); });
    $("measureBtn").addEventListener("click", () => {
      state.measuring = !state.measuring;
      $("measureBtn").classList.toggle("active", state.measuring);
      clearMeasure();
      $("measure").textContent = state.measuring ? "click the first point" : "";
      scene.requestRender();
    });
    $("shareBtn").addEventListener("click", async () => {
      updateUrl();
      await new Promise((r) => setTimeout(r, 200));
      const box = $("shareUrl");
      box.value = window.location.href;
      box.hidden = false;
      box.select();
      try { await navigator.clipboard.writeText(box.value); } catch (e) { /* not allowed: the box shows it */ }
    });
    state.measureEntities = [];
    window.twin.measureAt = (x, y) => measureClick(new Cesium.Cartesian2(x, y));

    // panorama mode
    $("panoClose").addEventListener("click", closePanorama);
    $("panoPrev").addEventListener("click", () => stepPanorama(-1));
    $("panoNext").addEventListener("click", () => stepPanorama(1));
    window.addEventListener("keydown", (e) => {
      if ($("pano").hidden) return;
      if (e.key === "Escape") closePanorama();
      else if (e.key === "PageDown" || e.key === "]") stepPanorama(1);
      else if (e.key === "PageUp" || e.key === "[") stepPanorama(-1);
      else if (e.key === "ArrowLeft" || e.key === "ArrowRight") {
        const v = state.pano.view.view();
        state.pano.view.look(v.yaw + (e.key === "ArrowLeft" ? -10 : 10), v.pitch);
      }
    });
    window.twin.panorama = {
      open: (id) => { const l = findPanorama(id); return l ? openPanorama(l, id) : Promise.reject(new Error(`unknown panorama ${id}`)); },
      next: () => stepPanorama(1),
      prev: () => stepPanorama(-1),
      close: () => { closePanorama(); return panoramaState(); },
      look: (yaw, pitch, fov) => { state.pano.view.look(yaw, pitch ?? 0, fov); return panoramaState(); },
      state: panoramaState,
    };
    const wantPano = params.get("pano");
    if (wantPano && findPanorama(wantPano)) window.twin.panorama.open(wantPano).catch((e) => fail(`panorama ${wantPano}: ${e.message || e}`, e));
  }

  window.addEventListener("DOMContentLoaded", () => {
    main().catch((e) => {
      fail(`viewer failed: ${e.message || e}`, e);
      resolveReady({ ok: false, errors });
    });
  });
})();
