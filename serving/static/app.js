// Perfect10k web map: set a start, plan complete loops or build one step by step, follow
// the build of a new area, show green space, water and edge scores, and export GPX.
// Everything except the map tiles (from the configured tile URL) is loaded from this server.
(function () {
  "use strict";

  const DEFAULT_CONFIG = {
    tile_url: "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
    attribution:
      '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors',
    min_distance_m: 1000,
    max_distance_m: 25000,
    step_length_m: 0.8,
    max_alternatives: 5,
    overlay_max_area_deg2: 0.1,
  };
  const ALTERNATIVES = 3;
  const POLL_INTERVAL_MS = 500;
  // Matches the server's job timeout (300 s) plus a margin for the last poll.
  const POLL_TIMEOUT_MS = 320000;
  const OVERLAY_DEBOUNCE_MS = 300;
  const SLIDER_STEP = 250;
  // Room around fitted routes for the map controls and the notes box at the bottom. A
  // phone's small map keeps only a thin margin at the sides.
  const fitOptions = () => {
    const side = map.getSize().x < 500 ? 12 : 50;
    const notesHeight = document.getElementById("map-notes").offsetHeight;
    return { paddingTopLeft: [side, side], paddingBottomRight: [side, notesHeight + 30] };
  };
  const GREEN_KINDS = new Set(["park", "green", "forest"]);
  const LINE_KINDS = new Set(["waterway", "coastline"]);
  const AREA_STYLES = {
    park: { fillColor: "#40c057", fillOpacity: 0.35 },
    green: { fillColor: "#8ce99a", fillOpacity: 0.35 },
    forest: { fillColor: "#2b8a3e", fillOpacity: 0.35 },
    water: { fillColor: "#4dabf7", fillOpacity: 0.5 },
  };
  // Colour ramps of the score layers, from a score of 0 to a score of 1.
  const SCORE_RAMPS = {
    green: ["#f7fcb9", "#006837"],
    water: ["#f7fbff", "#08519c"],
    quiet: ["#fcfbfd", "#54278f"],
  };
  const SHARE_LABELS = {
    green: "Green",
    water: "Water",
    quiet: "Quiet",
    park: "Park",
    poi: "Sights",
  };

  const $ = (id) => document.getElementById(id);
  const numberFormat = new Intl.NumberFormat("en");

  const state = {
    config: DEFAULT_CONFIG,
    start: null,
    mode: "loop",
    loops: [],
    loopIndex: 0,
    seed: null,
    route: null,
    // Each plan request gets a new id, so a late response to an older one is dropped.
    requestId: 0,
    busy: false,
  };

  // Messages

  function showMessage(text, kind) {
    const box = $("message");
    box.textContent = text;
    box.className = "message " + (kind || "error");
    box.hidden = false;
  }

  function clearMessage() {
    $("message").hidden = true;
    $("message").textContent = "";
  }

  window.addEventListener("error", (event) => {
    showMessage("Something went wrong on this page: " + event.message + ". Reload to start again.");
  });
  window.addEventListener("unhandledrejection", (event) => {
    const reason = event.reason && event.reason.message ? event.reason.message : event.reason;
    showMessage("Something went wrong on this page: " + reason + ". Reload to start again.");
  });

  // HTTP

  class RequestError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path, body, signal) {
    const options = { method, headers: { accept: "application/json" }, signal };
    if (body !== undefined) {
      options.headers["content-type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, options);
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new RequestError("The server did not respond. Check that it runs and try again.", 0);
    }
    const text = await response.text();
    let payload = null;
    try {
      payload = text ? JSON.parse(text) : null;
    } catch (error) {
      payload = null;
    }
    if (!response.ok) {
      let detail = payload && payload.detail ? payload.detail : "HTTP " + response.status;
      const retryAfter = response.headers.get("Retry-After");
      if (retryAfter) detail += " (retry in " + retryAfter + " s)";
      throw new RequestError(detail, response.status);
    }
    return { status: response.status, body: payload };
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // Formatting and small DOM helpers

  const formatKm = (metres) => (metres / 1000).toFixed(2) + " km";
  const formatPercent = (share) => Math.round(share * 100) + "%";
  const toLatLngs = (coordinates) => coordinates.map(([lon, lat]) => [lat, lon]);

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fillShares(list, values) {
    list.replaceChildren();
    for (const [name, value] of Object.entries(values)) {
      if (value === null || value === undefined) continue;
      const item = element("li");
      item.dataset.share = name;
      const bar = element("div", "bar " + name);
      const fill = element("span");
      fill.style.width = formatPercent(Math.min(Math.max(value, 0), 1));
      bar.append(fill);
      item.append(element("span", "label", SHARE_LABELS[name] || name), bar);
      item.append(element("span", "value", formatPercent(value)));
      list.append(item);
    }
  }

  function fillPreference(box, preference) {
    box.replaceChildren();
    if (!preference || !preference.text) {
      box.append(element("p", "hint", "No preference given."));
      return;
    }
    box.append(element("p", "summary", "Preference: " + preference.summary));
    const groups = [
      ["matched", "Matched", preference.matched],
      ["avoid", "Avoided", preference.avoid],
      ["ignored", "Not understood", preference.ignored],
    ];
    for (const [kind, label, terms] of groups) {
      if (!terms || terms.length === 0) continue;
      const line = element("p", "terms " + kind);
      line.append(label + ": ");
      for (const term of terms) line.append(element("span", "chip " + kind, term));
      box.append(line);
    }
  }

  // Map

  const map = L.map("map", { worldCopyJump: true, zoomControl: true, zoomSnap: 0.5 });
  map.attributionControl.setPrefix(
    '<a href="https://leafletjs.com" title="A JavaScript library for interactive maps">Leaflet</a>'
  );
  // Overlays get their own panes below Leaflet's overlay pane (z-index 400), so loops and
  // routes always draw above green space, water and score dots.
  map.createPane("areas").style.zIndex = "350";
  map.createPane("scores").style.zIndex = "375";
  const scoreRenderer = L.canvas({ padding: 0.2, pane: "scores" });
  const layers = {
    green: L.layerGroup(),
    water: L.layerGroup(),
    scoreGreen: L.layerGroup(),
    scoreWater: L.layerGroup(),
    scoreQuiet: L.layerGroup(),
    loops: L.layerGroup().addTo(map),
    route: L.layerGroup().addTo(map),
  };
  const scoreLayers = {
    green: layers.scoreGreen,
    water: layers.scoreWater,
    quiet: layers.scoreQuiet,
  };
  let tileLayer = null;
  let startMarker = null;

  // A box in the bottom-left corner for tile failures, overlay hints and the score legend.
  const MapNotes = L.Control.extend({
    options: { position: "bottomleft" },
    onAdd() {
      const box = L.DomUtil.create("div", "map-notes");
      box.id = "map-notes";
      L.DomEvent.disableClickPropagation(box);
      return box;
    },
  });
  new MapNotes().addTo(map);
  const notes = { tiles: "", overlays: "", legend: null };

  function renderNotes() {
    const box = $("map-notes");
    box.replaceChildren();
    if (notes.tiles) box.append(element("p", "note-tiles", notes.tiles));
    if (notes.overlays) box.append(element("p", "note-overlays", notes.overlays));
    if (notes.legend) box.append(notes.legend);
  }

  function setupMap(config) {
    tileLayer = L.tileLayer(config.tile_url, { maxZoom: 19, crossOrigin: false });
    let failures = 0;
    tileLayer.on("tileerror", () => {
      failures += 1;
      if (failures === 1) {
        notes.tiles = "No map tiles: routes and overlays still show.";
        renderNotes();
      }
    });
    tileLayer.on("tileload", () => {
      if (notes.tiles) {
        notes.tiles = "";
        renderNotes();
      }
    });
    tileLayer.addTo(map);
    // Attribution belongs to the map data, so it stays even when tiles fail to load.
    map.attributionControl.addAttribution(config.attribution);

    const overlays = {
      "Green space": layers.green,
      Water: layers.water,
      "Green score": layers.scoreGreen,
      "Water score": layers.scoreWater,
      "Quiet score": layers.scoreQuiet,
    };
    layers.green.addTo(map);
    layers.water.addTo(map);
    L.control
      .layers(null, overlays, { collapsed: window.matchMedia("(max-width: 700px)").matches })
      .addTo(map);
    map.on("overlayadd overlayremove moveend", scheduleOverlays);
    scheduleOverlays();
    map.on("click", (event) => {
      const point = event.latlng.wrap();
      setStart(point.lat, point.lng, "map");
    });
  }

  async function fitToRegions() {
    try {
      const { body } = await api("GET", "/api/regions");
      if (!body || body.length === 0) {
        map.setView([20, 0], 2);
        showMessage(
          "No region is imported yet; import an extract with `perfect10k import`.",
          "info"
        );
        return;
      }
      // Prefer the region with the most built cells, where loops are served at once.
      const region = body.reduce((best, item) =>
        item.cells_built > best.cells_built ? item : best
      );
      const [minLon, minLat, maxLon, maxLat] = region.bbox;
      if (!state.start) map.fitBounds([[minLat, minLon], [maxLat, maxLon]]);
    } catch (error) {
      map.setView([20, 0], 2);
      showMessage("Could not list the imported regions: " + error.message);
    }
  }

  // Overlays

  let overlayTimer = null;
  let overlayAbort = null;

  function scheduleOverlays() {
    clearTimeout(overlayTimer);
    overlayTimer = setTimeout(loadOverlays, OVERLAY_DEBOUNCE_MS);
  }

  function visibleOverlays() {
    return Object.entries(layers).filter(
      ([name, layer]) => name !== "loops" && name !== "route" && map.hasLayer(layer)
    );
  }

  async function loadOverlays() {
    updateLegend();
    if (visibleOverlays().length === 0) {
      notes.overlays = "";
      renderNotes();
      return;
    }

    const bounds = map.getBounds();
    const west = Math.max(bounds.getWest(), -180);
    const east = Math.min(bounds.getEast(), 180);
    const south = Math.max(bounds.getSouth(), -90);
    const north = Math.min(bounds.getNorth(), 90);
    if ((east - west) * (north - south) > state.config.overlay_max_area_deg2 || east <= west) {
      clearOverlays();
      notes.overlays = "Zoom in to see the overlays.";
      renderNotes();
      return;
    }

    if (overlayAbort) overlayAbort.abort();
    overlayAbort = new AbortController();
    const bbox = [west, south, east, north].map((value) => value.toFixed(6)).join(",");
    const withScores = Object.values(scoreLayers).some((layer) => map.hasLayer(layer));
    const query = "/api/overlays?bbox=" + bbox + "&scores=" + withScores;
    try {
      const { body } = await api("GET", query, undefined, overlayAbort.signal);
      drawOverlays(body);
      const truncated = body.areas_truncated || (withScores && body.scores_truncated);
      notes.overlays = truncated ? "Overlays show a sample; zoom in for all." : "";
      if (body.cells === 0) notes.overlays = "Overlays appear once this area is built.";
      renderNotes();
    } catch (error) {
      if (error.name === "AbortError") return;
      notes.overlays = "Overlays could not load: " + error.message;
      renderNotes();
    }
  }

  function clearOverlays() {
    for (const [name, layer] of Object.entries(layers)) {
      if (name !== "loops" && name !== "route") layer.clearLayers();
    }
  }

  function scoreColor(name, value) {
    const [low, high] = SCORE_RAMPS[name];
    const channel = (hex, index) => parseInt(hex.slice(1 + index * 2, 3 + index * 2), 16);
    const mix = [0, 1, 2].map((index) =>
      Math.round(channel(low, index) + (channel(high, index) - channel(low, index)) * value)
    );
    return "rgb(" + mix.join(",") + ")";
  }

  function drawOverlays(collection) {
    clearOverlays();
    const areas = collection.features.filter((feature) => feature.properties.layer === "area");
    const scores = collection.features.filter((feature) => feature.properties.layer === "score");
    const style = (feature) => {
      const kind = feature.properties.kind;
      if (LINE_KINDS.has(kind)) return { color: "#1c7ed6", weight: 2, opacity: 0.8 };
      return { stroke: false, ...(AREA_STYLES[kind] || AREA_STYLES.green) };
    };
    const options = { style, interactive: false, pane: "areas" };
    const isGreen = (feature) => GREEN_KINDS.has(feature.properties.kind);
    const asCollection = (features) => ({ type: "FeatureCollection", features });
    L.geoJSON(asCollection(areas.filter(isGreen)), options).addTo(layers.green);
    L.geoJSON(asCollection(areas.filter((f) => !isGreen(f))), options).addTo(layers.water);
    for (const [name, layer] of Object.entries(scoreLayers)) {
      if (!map.hasLayer(layer)) continue;
      for (const feature of scores) {
        const [lon, lat] = feature.geometry.coordinates;
        const value = feature.properties[name];
        L.circleMarker([lat, lon], {
          renderer: scoreRenderer,
          radius: 3 + 2 * value,
          stroke: false,
          fillColor: scoreColor(name, value),
          fillOpacity: 0.8,
          interactive: false,
        }).addTo(layer);
      }
    }
    // Loops and routes stay above the overlays.
    layers.loops.eachLayer((layer) => layer.bringToFront && layer.bringToFront());
  }

  function updateLegend() {
    const shown = Object.entries(scoreLayers).filter(([, layer]) => map.hasLayer(layer));
    if (shown.length === 0) {
      notes.legend = null;
    } else {
      const legend = element("div", "legend");
      for (const [name] of shown) {
        const line = element("p");
        const ramp = element("span", "legend-ramp " + name);
        line.append(SHARE_LABELS[name] + " score: low", ramp, "high");
        legend.append(line);
      }
      notes.legend = legend;
    }
    renderNotes();
  }

  // Start

  function parseLatLon(text) {
    const match = /^\s*(-?\d+(?:\.\d+)?)\s*(?:[,;]\s*|\s+)(-?\d+(?:\.\d+)?)\s*$/.exec(text);
    if (!match) {
      throw new Error('Type the start as "lat, lon" in degrees, e.g. 43.7400, 7.4250.');
    }
    const lat = Number(match[1]);
    const lon = Number(match[2]);
    if (lat < -90 || lat > 90) {
      throw new Error("Latitude " + lat + " is out of range: use -90 to 90.");
    }
    if (lon < -180 || lon > 180) {
      throw new Error("Longitude " + lon + " is out of range: use -180 to 180.");
    }
    return [lat, lon];
  }

  const startText = (lat, lon) => lat.toFixed(5) + ", " + lon.toFixed(5);

  function setStart(lat, lon, source) {
    state.start = { lat, lon };
    const text = startText(lat, lon);
    if (startMarker) {
      startMarker.setLatLng([lat, lon]);
    } else {
      startMarker = L.marker([lat, lon], { draggable: true, title: "Start", keyboard: false });
      startMarker.on("dragend", () => {
        const point = startMarker.getLatLng().wrap();
        setStart(point.lat, point.lng, "drag");
      });
      startMarker.addTo(map);
    }
    $("start-input").value = text;
    $("start-status").textContent = "Start set at " + text + ". Drag the marker to move it.";
    if (source !== "map" && source !== "drag") {
      map.setView([lat, lon], Math.max(map.getZoom(), 14), { animate: false });
    }
    clearMessage();
  }

  function setStartFromInput() {
    try {
      const [lat, lon] = parseLatLon($("start-input").value);
      setStart(lat, lon, "input");
      return true;
    } catch (error) {
      showMessage(error.message);
      return false;
    }
  }

  function locate() {
    if (!navigator.geolocation) {
      showMessage("This browser does not share its location; click the map or type lat, lon.");
      return;
    }
    $("start-status").textContent = "Finding your location…";
    navigator.geolocation.getCurrentPosition(
      (position) => setStart(position.coords.latitude, position.coords.longitude, "location"),
      (error) => {
        $("start-status").textContent = 'Click the map, type "lat, lon" or use your location.';
        showMessage(
          "Your location is not available (" + error.message + "); click the map instead."
        );
      },
      { enableHighAccuracy: true, timeout: 10000, maximumAge: 60000 }
    );
  }

  // Distance

  function setupSlider(config) {
    const slider = $("steps");
    const step = config.step_length_m;
    slider.min = String(Math.ceil(config.min_distance_m / step / SLIDER_STEP) * SLIDER_STEP);
    slider.max = String(Math.floor(config.max_distance_m / step / SLIDER_STEP) * SLIDER_STEP);
    slider.addEventListener("input", updateSlider);
    updateSlider();
  }

  function targetMetres() {
    const metres = Number($("steps").value) * state.config.step_length_m;
    return Math.min(Math.max(metres, state.config.min_distance_m), state.config.max_distance_m);
  }

  function updateSlider() {
    const steps = Number($("steps").value);
    const metres = numberFormat.format(targetMetres());
    const text = numberFormat.format(steps) + " steps ≈ " + metres + " m";
    $("steps-output").textContent = text;
    $("steps").setAttribute("aria-valuetext", text);
  }

  // Modes and planning

  function setMode(mode) {
    state.mode = mode;
    $("mode-loop").setAttribute("aria-selected", String(mode === "loop"));
    $("mode-steps").setAttribute("aria-selected", String(mode === "steps"));
    $("go").textContent = mode === "loop" ? "Plan loops" : "Start route";
  }

  function setBusy(busy, label) {
    state.busy = busy;
    $("go").disabled = busy;
    if (busy) {
      $("go").textContent = label;
    } else {
      setMode(state.mode);
    }
    $("loop-other").disabled = busy;
    $("finalize").disabled = busy || !state.route || state.route.waypoints.length === 0;
    for (const button of document.querySelectorAll(".walk-here")) button.disabled = busy;
  }

  function clearResults() {
    layers.loops.clearLayers();
    layers.route.clearLayers();
    $("loop-result").hidden = true;
    $("route-result").hidden = true;
    state.loops = [];
    state.route = null;
  }

  async function plan(options) {
    if (!state.start) {
      showMessage('Set a start first: click the map, type "lat, lon" or use your location.');
      return;
    }
    const mode = state.mode;
    const request = {
      lat: state.start.lat,
      lon: state.start.lon,
      target_distance: targetMetres(),
      preference: $("preference").value.trim(),
    };
    if (mode === "loop") request.alternatives = ALTERNATIVES;
    state.seed = options && options.newSeed ? Math.floor(Math.random() * 2 ** 31) : null;
    if (state.seed !== null) request.seed = state.seed;

    const requestId = ++state.requestId;
    clearMessage();
    clearResults();
    setBusy(true, mode === "loop" ? "Planning loops…" : "Finding waypoints…");
    try {
      const path = mode === "loop" ? "/api/loops" : "/api/start-route-async";
      const answer = await api("POST", path, request);
      let body = answer.body;
      if (answer.status === 202) body = await waitForJob(body, requestId);
      if (body === null || requestId !== state.requestId) return;
      if (mode === "loop") showLoops(body);
      else showRoute(body.route, true);
    } catch (error) {
      if (requestId !== state.requestId) return;
      const what = mode === "loop" ? "No loop could be planned: " : "The route could not start: ";
      showMessage(what + error.message);
    } finally {
      if (requestId === state.requestId) setBusy(false);
    }
  }

  // Poll a cold-area job until it completes. Returns its result, or null when a newer
  // request replaced it.
  async function waitForJob(accepted, requestId) {
    const box = $("progress");
    const bar = $("progress-bar");
    const text = $("progress-text");
    const show = (progress, ready, needed, status) => {
      bar.value = progress;
      bar.setAttribute("aria-valuenow", String(Math.round(progress * 100)));
      const cells = needed ? " (" + ready + " of " + needed + " map cells ready)" : "";
      const label = status === "pending" ? "Waiting to prepare this area" : "Preparing this area";
      text.textContent = label + " for the first time: " + formatPercent(progress) + cells;
    };
    box.hidden = false;
    show(accepted.progress, accepted.cells_ready, accepted.cells_needed, "pending");
    const deadline = Date.now() + POLL_TIMEOUT_MS;
    try {
      while (Date.now() < deadline) {
        await sleep(POLL_INTERVAL_MS);
        if (requestId !== state.requestId) return null;
        const { body } = await api("GET", accepted.status_url);
        if (requestId !== state.requestId) return null;
        show(body.progress, body.cells_ready, body.cells_needed, body.status);
        if (body.status === "completed") return body.result;
        if (body.status === "failed") {
          throw new Error("preparing this area failed (" + (body.error || "no reason given") + ")");
        }
      }
      throw new Error("preparing this area took too long; try again in a minute");
    } finally {
      if (requestId === state.requestId) box.hidden = true;
    }
  }

  // Show a new result: scroll it into the panel's view (a short sheet on phones) and let the
  // map take its new size before fitting anything into it.
  function revealResult(section) {
    section.scrollIntoView({ block: "nearest" });
    map.invalidateSize({ animate: false });
  }

  // Complete loops

  function showLoops(body) {
    state.loops = body.loops;
    state.loopIndex = 0;
    layers.loops.clearLayers();
    state.loopLines = body.loops.map((loop) =>
      L.polyline(toLatLngs(loop.geometry.coordinates), { interactive: false }).addTo(layers.loops)
    );
    fillPreference($("loop-preference"), body.preference);
    const snap = body.start.snap_distance_m;
    $("loop-snap").hidden = snap < 25;
    $("loop-snap").textContent =
      "The start moved " + Math.round(snap) + " m to the nearest walkable way.";
    $("loop-result").hidden = false;
    showLoop(0);
    revealResult($("loop-result"));
    if (state.loopLines.length) {
      map.fitBounds(L.featureGroup(state.loopLines).getBounds(), fitOptions());
    }
  }

  function showLoop(index) {
    const count = state.loops.length;
    state.loopIndex = (index + count) % count;
    const loop = state.loops[state.loopIndex];
    state.loopLines.forEach((line, lineIndex) => {
      const chosen = lineIndex === state.loopIndex;
      line.setStyle(
        chosen
          ? { color: "#d9480f", weight: 5, opacity: 0.95, dashArray: null }
          : { color: "#495057", weight: 3, opacity: 0.45, dashArray: "6 6" }
      );
      if (chosen) line.bringToFront();
    });
    $("loop-index").textContent = "Loop " + (state.loopIndex + 1) + " of " + count;
    $("loop-prev").disabled = count < 2;
    $("loop-next").disabled = count < 2;
    $("loop-distance").textContent = formatKm(loop.distance_m);
    $("loop-steps").textContent = numberFormat.format(loop.steps);
    fillShares($("loop-shares"), {
      green: loop.green_share,
      water: loop.water_share,
      quiet: loop.quiet_share,
    });
    $("loop-gpx").href = loop.gpx_url;
  }

  // Step by step

  function showRoute(view, isStart) {
    state.route = view;
    layers.route.clearLayers();
    const coordinates = view.geometry.coordinates;
    if (coordinates.length > 1) {
      L.polyline(toLatLngs(coordinates), { color: "#d9480f", weight: 5, opacity: 0.95 }).addTo(
        layers.route
      );
    }
    view.waypoints.forEach(([lon, lat], index) => {
      L.marker([lat, lon], {
        icon: L.divIcon({ className: "waypoint-icon", html: "<span></span>", iconSize: [14, 14] }),
        title: "Waypoint " + (index + 1),
        keyboard: false,
      }).addTo(layers.route);
    });
    const finalized = view.status === "finalized";
    const list = $("candidates");
    list.replaceChildren();
    if (!finalized) {
      view.candidates.forEach((candidate, index) => addCandidate(candidate, index + 1, list));
    }

    $("route-distance").textContent = finalized
      ? formatKm(view.distance_m)
      : (view.distance_m / 1000).toFixed(2) + " / " + formatKm(view.target_distance);
    $("route-steps").textContent = numberFormat.format(view.steps);
    $("route-remaining").textContent = formatKm(view.remaining_m);
    $("route-remaining").parentElement.hidden = finalized;
    $("route-distance-label").textContent = finalized ? "Distance" : "So far";
    let hint = "Pick the next waypoint on the map or in this list.";
    if (finalized) {
      hint = "Loop closed: back at the start. Download it as GPX to walk it.";
    } else if (view.finalize_suggested) {
      hint = "You are close to your target: finish the loop to walk back to the start.";
    }
    $("route-hint").textContent = hint;
    const finalizeButton = $("finalize");
    finalizeButton.hidden = finalized;
    finalizeButton.classList.toggle("suggested", Boolean(view.finalize_suggested));
    finalizeButton.disabled = state.busy || view.waypoints.length === 0;
    $("route-shares").hidden = !finalized;
    if (finalized) {
      fillShares($("route-shares"), { green: view.green_share, quiet: view.quiet_share });
    }
    $("route-gpx").hidden = !finalized || !view.gpx_url;
    if (view.gpx_url) $("route-gpx").href = view.gpx_url;
    fillPreference($("route-preference"), view.preference);
    $("route-result").hidden = false;
    if (isStart) revealResult($("route-result"));

    // Keep the route and the next candidates in view after every step.
    const points = view.candidates.map((c) => [c.lat, c.lon]).concat(toLatLngs(coordinates));
    if (state.start) points.push([state.start.lat, state.start.lon]);
    map.invalidateSize({ animate: false });
    if (points.length) map.fitBounds(points, { ...fitOptions(), maxZoom: 16 });
  }

  function featureShares(features) {
    const values = {};
    for (const name of ["green", "water", "quiet", "park", "poi"]) {
      if (name in features) values[name] = features[name];
    }
    return values;
  }

  function candidateDetails(candidate, number, withButton) {
    const body = element("div", "details");
    body.append(element("p", "reason", candidate.reason));
    const score = formatPercent(candidate.score);
    const summary = "+" + formatKm(candidate.distance_m) + " · score " + score;
    body.append(element("p", "hint", summary));
    const scores = element("ul", "scores");
    for (const [name, value] of Object.entries(featureShares(candidate.features))) {
      const item = element("li", "score " + name);
      item.dataset.feature = name;
      item.append(element("span", "dot " + name), SHARE_LABELS[name] + " " + formatPercent(value));
      scores.append(item);
    }
    body.append(scores);
    if (withButton) {
      const button = element("button", "walk-here", "Walk to " + number);
      button.type = "button";
      button.addEventListener("click", () => addWaypoint(candidate.candidate_id));
      body.append(button);
    }
    return body;
  }

  function addCandidate(candidate, number, list) {
    const marker = L.marker([candidate.lat, candidate.lon], {
      icon: L.divIcon({
        className: "candidate-icon",
        html: "<span>" + number + "</span>",
        iconSize: [30, 30],
        iconAnchor: [15, 15],
      }),
      title: "Candidate " + number,
      riseOnHover: true,
      // Candidates can lie a few metres apart; the lower number stays on top.
      zIndexOffset: 1000 * (10 - number),
    });
    const popup = element("div", "popup");
    popup.append(element("h3", null, "Waypoint " + number));
    popup.append(candidateDetails(candidate, number, true));
    // The top padding keeps the popup clear of the zoom and layer controls.
    marker.bindPopup(popup, {
      maxWidth: 230,
      autoPanPaddingTopLeft: [16, 64],
      autoPanPaddingBottomRight: [16, 40],
    });
    marker.addTo(layers.route);

    const item = element("li", "candidate");
    item.dataset.candidateId = candidate.candidate_id;
    const badge = element("span", "badge", String(number));
    item.append(badge, candidateDetails(candidate, number, false));
    const button = element("button", "walk-here", "Walk here");
    button.type = "button";
    button.addEventListener("click", () => addWaypoint(candidate.candidate_id));
    item.append(button);
    list.append(item);
  }

  async function routeStep(path, body, busyLabel, failurePrefix) {
    if (!state.route || state.busy) return;
    map.closePopup();
    clearMessage();
    setBusy(true, busyLabel);
    try {
      const answer = await api("POST", path, body);
      showRoute(answer.body, false);
    } catch (error) {
      showMessage(failurePrefix + error.message);
    } finally {
      setBusy(false);
    }
  }

  function routePath(suffix) {
    return "/api/routes/" + encodeURIComponent(state.route.route_id) + suffix;
  }

  function addWaypoint(candidateId) {
    if (!state.route) return;
    routeStep(
      routePath("/waypoints"),
      { candidate_id: candidateId },
      "Adding waypoint…",
      "The waypoint could not be added: "
    );
  }

  function finalizeRoute() {
    if (!state.route) return;
    const failure = "The loop could not be closed: ";
    routeStep(routePath("/finalize"), undefined, "Closing loop…", failure);
  }

  // Panel on phones

  function togglePanel() {
    const panel = $("panel");
    const folded = panel.classList.toggle("folded");
    $("panel-toggle").textContent = folded ? "Show" : "Hide";
    $("panel-toggle").setAttribute("aria-expanded", String(!folded));
    map.invalidateSize();
  }

  // Wiring

  function bindControls() {
    $("start-set").addEventListener("click", setStartFromInput);
    $("start-input").addEventListener("keydown", (event) => {
      if (event.key === "Enter") setStartFromInput();
    });
    $("locate").addEventListener("click", locate);
    $("preference").addEventListener("keydown", (event) => {
      if (event.key === "Enter") plan();
    });
    $("mode-loop").addEventListener("click", () => setMode("loop"));
    $("mode-steps").addEventListener("click", () => setMode("steps"));
    $("go").addEventListener("click", () => {
      // A start typed but not yet confirmed with Set counts as set.
      const typed = $("start-input").value.trim();
      const current = state.start ? startText(state.start.lat, state.start.lon) : "";
      if (typed && typed !== current && !setStartFromInput()) return;
      plan();
    });
    $("loop-prev").addEventListener("click", () => showLoop(state.loopIndex - 1));
    $("loop-next").addEventListener("click", () => showLoop(state.loopIndex + 1));
    $("loop-other").addEventListener("click", () => plan({ newSeed: true }));
    $("finalize").addEventListener("click", finalizeRoute);
    $("panel-toggle").addEventListener("click", togglePanel);
    new ResizeObserver(() => map.invalidateSize()).observe($("map"));
  }

  async function init() {
    bindControls();
    setMode("loop");
    try {
      const { body } = await api("GET", "/api/config");
      state.config = { ...DEFAULT_CONFIG, ...body };
    } catch (error) {
      showMessage("Could not load the map settings (" + error.message + "); using defaults.");
    }
    setupSlider(state.config);
    await fitToRegions();
    setupMap(state.config);
    document.body.dataset.ready = "true";
  }

  init();
})();
