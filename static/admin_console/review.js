/* The review queue: one detection at a time on a large crop of the orthophoto, its place on a small map, and the
   decision by keyboard or button. Every decision is a call to the API (PATCH /api/detections/{id}/, POST
   /api/detections/ for a site the model missed), which checks it; the page shows the answer and moves on.
   Boxes on the crop are kept in the orthophoto's pixels: window = [x, y, width, height] of the crop in the
   orthophoto, and the picture's displayed width over the window's width is the scale. */
(function () {
  "use strict";

  function csrf() {
    const match = document.cookie.match(/csrftoken=([^;]+)/);
    return match ? match[1] : "";
  }

  async function call(method, url, body) {
    const response = await fetch(url, {
      method: method,
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrf()},
      body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(answer.message || ("HTTP " + response.status));
    return answer;
  }

  document.addEventListener("DOMContentLoaded", function () {
    const source = document.getElementById("review-data");
    if (!source) return;
    const data = JSON.parse(source.textContent);
    const stage = document.getElementById("review-stage");
    const img = document.getElementById("review-crop");
    const boxEl = document.getElementById("review-box");
    const newEl = document.getElementById("review-new");
    const status = document.getElementById("review-status");
    const classesEl = document.getElementById("review-classes");
    let index = 0, box = null, newBox = null, chosenClass = null, drag = null;

    let map = null, mapLayer = null;
    if (window.L && data.coordinates === "map" && data.footprints.length) {
      map = L.map("review-map", {zoomControl: false, attributionControl: false});
      const outlines = L.featureGroup().addTo(map);
      data.footprints.forEach((f) => L.polygon(f.ring.map((p) => [p[1], p[0]]),
        {color: "#2f6fb0", weight: 1, fillOpacity: 0.05}).addTo(outlines));
      map.fitBounds(outlines.getBounds());
    } else {
      document.getElementById("review-map").hidden = true;
    }

    data.classes.forEach(function (name, i) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "button class-choice";
      button.dataset.name = name;
      button.textContent = (i < 9 ? (i + 1) + " " : "") + name;
      button.addEventListener("click", () => chooseClass(name));
      classesEl.appendChild(button);
      classesEl.append(" ");
    });
    classesEl.classList.add("review-classes");

    function item() { return data.items[index]; }
    function scale() { return img.clientWidth / item().window[2]; }

    function place(el, b) {
      if (!b) { el.hidden = true; return; }
      const [wx, wy] = item().window, s = scale();
      el.hidden = false;
      el.style.left = (b[0] - wx) * s + "px";
      el.style.top = (b[1] - wy) * s + "px";
      el.style.width = (b[2] - b[0]) * s + "px";
      el.style.height = (b[3] - b[1]) * s + "px";
    }

    function same(a, b) { return a.every((v, i) => Math.abs(v - b[i]) < 0.5); }

    function draw() {
      const it = item();
      place(boxEl, box);
      boxEl.classList.toggle("changed", !same(box, it.box));
      place(newEl, newBox);
      document.querySelectorAll(".class-choice").forEach(
        (b) => b.classList.toggle("chosen", b.dataset.name === (chosenClass || it["class"])));
    }

    function show(i) {
      if (!data.items.length) {
        document.getElementById("review-title").textContent = "Nothing to review in this queue.";
        document.getElementById("review").classList.add("empty");
        return;
      }
      index = Math.max(0, Math.min(data.items.length - 1, i));
      const it = item();
      box = it.box.slice();
      newBox = null;
      chosenClass = null;
      document.getElementById("review-title").textContent =
        "#" + it.id + " " + it["class"] + " " + it.score.toFixed(2);
      const meta = document.getElementById("review-meta");
      meta.replaceChildren();
      const state = document.createElement("span");
      state.id = "review-state";
      state.className = "state-" + it.state;
      state.textContent = it.state;
      meta.append(state, " · " + (index + 1) + " of " + data.items.length + " on this page (" + data.total +
                  " in the queue)" + (it.origin === "reviewer" ? " · drawn by a reviewer" : ""));
      img.onload = draw;
      img.src = it.crop;
      if (img.complete) draw();
      if (map) {
        if (mapLayer) map.removeLayer(mapLayer);
        mapLayer = L.polygon(it.ring.map((p) => [p[1], p[0]]), {color: "#ff3b30", weight: 3}).addTo(map);
        map.setView(mapLayer.getBounds().getCenter(), Math.max(map.getZoom(), 17));
      }
      stage.focus();
    }

    function chooseClass(name) { chosenClass = name === item()["class"] ? null : name; draw(); }

    async function decide(state) {
      const it = item(), body = {state: state};
      if (!same(box, it.box)) body.pixel_box = box.map((v) => Math.round(v * 100) / 100);
      if (chosenClass) body.class_name = chosenClass;
      try {
        const answer = await call("PATCH", "/api/detections/" + it.id + "/", body);
        Object.assign(it, {state: answer.state, box: answer.pixel_box, "class": answer.class_name, ring: answer.geometry
          ? answer.geometry.coordinates[0] : it.ring});
        status.textContent = "#" + it.id + " " + answer.state + (body.pixel_box ? " (box corrected)" : "") +
          (body.class_name ? " (class " + body.class_name + ")" : "");
        show(index + 1 < data.items.length ? index + 1 : index);
      } catch (error) {
        status.textContent = "Not saved: " + error.message;
      }
    }

    async function addSite() {
      if (!newBox) { status.textContent = "Shift-drag on the crop to draw the missed site first."; return; }
      const it = item();
      try {
        const answer = await call("POST", "/api/detections/", {
          run: data.run, orthophoto: it.orthophoto, pixel_box: newBox.map((v) => Math.round(v * 100) / 100),
          class_name: chosenClass || it["class"],
        });
        status.textContent = "Added a missed site: #" + answer.id + " " + answer.class_name;
        newBox = null;
        draw();
      } catch (error) {
        status.textContent = "Not added: " + error.message;
      }
    }

    function toPixels(event) {
      const rect = img.getBoundingClientRect(), s = scale(), [wx, wy, ww, wh] = item().window;
      const x = Math.max(0, Math.min(ww, (event.clientX - rect.left) / s));
      const y = Math.max(0, Math.min(wh, (event.clientY - rect.top) / s));
      return [wx + x, wy + y];
    }

    stage.addEventListener("mousedown", function (event) {
      if (!data.items.length) return;
      event.preventDefault();
      const [x, y] = toPixels(event);
      const inside = box && x > box[0] && x < box[2] && y > box[1] && y < box[3];
      drag = {start: [x, y], mode: event.shiftKey ? "new" : inside ? "move" : "draw", original: box.slice()};
    });
    window.addEventListener("mousemove", function (event) {
      if (!drag) return;
      const [x, y] = toPixels(event), [sx, sy] = drag.start;
      const rect = [Math.min(sx, x), Math.min(sy, y), Math.max(sx, x), Math.max(sy, y)];
      if (drag.mode === "move") {
        const [wx, wy, ww, wh] = item().window, o = drag.original;
        const dx = Math.max(wx - o[0], Math.min(wx + ww - o[2], x - sx));
        const dy = Math.max(wy - o[1], Math.min(wy + wh - o[3], y - sy));
        box = [o[0] + dx, o[1] + dy, o[2] + dx, o[3] + dy];
      } else if (rect[2] - rect[0] >= 2 && rect[3] - rect[1] >= 2) {
        if (drag.mode === "new") newBox = rect; else box = rect;
      }
      draw();
    });
    window.addEventListener("mouseup", function () { drag = null; });

    const KEYS = {
      c: () => decide("confirmed"), Enter: () => decide("confirmed"), x: () => decide("rejected"),
      u: () => decide("new"), a: addSite, ArrowRight: () => show(index + 1), ArrowLeft: () => show(index - 1),
      Escape: () => { box = item().box.slice(); newBox = null; chosenClass = null; draw(); },
    };
    document.addEventListener("keydown", function (event) {
      const tag = (event.target.tagName || "").toLowerCase();
      if (tag === "input" || tag === "select" || tag === "textarea" || !data.items.length) return;
      if (/^[1-9]$/.test(event.key) && data.classes[Number(event.key) - 1]) {
        chooseClass(data.classes[Number(event.key) - 1]);
        event.preventDefault();
        return;
      }
      const action = KEYS[event.key];
      if (action) { event.preventDefault(); action(); }
    });
    document.querySelectorAll(".review-buttons button").forEach(
      (b) => b.addEventListener("click", () => KEYS[b.dataset.key]()));
    window.addEventListener("resize", draw);
    show(0);
  });
})();
