/* A detection run's map: the orthophotos' footprints, the known sites (dashed; green when found), and the
   detections coloured by class. The score slider and the class boxes hide what is below or unticked; a click on a
   detection shows its crop (cut from the orthophoto by the server) beside the map. A run without georeferencing
   draws the same in the orthophoto's pixels (y down). Offline: no background tiles, the geometry still renders. */
(function () {
  "use strict";
  const PALETTE = ["#e6194b", "#f58231", "#ffe119", "#3cb44b", "#911eb4", "#f032e6", "#46f0f0", "#9a6324"];

  function text(tag, content) {
    const el = document.createElement(tag);
    el.textContent = content;
    return el;
  }

  document.addEventListener("DOMContentLoaded", function () {
    const holder = document.getElementById("detection-map");
    const source = document.getElementById("detection-map-data");
    if (!holder || !source || !window.L) return;
    const data = JSON.parse(source.textContent);
    const pixels = data.coordinates === "pixel";
    const at = pixels ? (p) => [-p[1], p[0]] : (p) => [p[1], p[0]];
    const map = L.map(holder, pixels ? {crs: L.CRS.Simple, minZoom: -8, preferCanvas: false} : {preferCanvas: false});
    const outlines = L.featureGroup().addTo(map);
    data.footprints.forEach(function (f) {
      L.polygon(f.ring.map(at), {color: "#2f6fb0", weight: 1, fillOpacity: 0.05, className: "footprint"})
        .bindTooltip("#" + f.id + " " + f.name).addTo(outlines);
    });
    data.sites.forEach(function (s) {
      s.rings.forEach(function (ring) {  // one outline per part of the site
        L.polygon(ring.map(at), {
          color: s.found ? "#3cb44b" : "#ffcc00", weight: 2, dashArray: "5 4", fillOpacity: 0,
          className: "known-site " + (s.found ? "found" : "missed"),
        }).bindTooltip(s.label + (s.found ? " (found)" : " (missed)")).addTo(outlines);
      });
    });

    const detail = document.getElementById("detection-detail");
    function show(d) {
      detail.replaceChildren();
      const img = document.createElement("img");
      img.id = "detection-crop";
      img.alt = "crop of detection #" + d.id;
      img.src = d.crop;
      detail.appendChild(img);
      const link = document.createElement("a");
      link.href = d.page;
      link.textContent = "#" + d.id + " " + d["class"] + " " + d.score.toFixed(2);
      const caption = document.createElement("p");
      caption.appendChild(link);
      caption.appendChild(text("span", " · " + d.state + (d.ignored ? " · in an ignore zone" : "")));
      detail.appendChild(caption);
    }

    const shapes = data.detections.map(function (d) {
      const colour = d.ignored ? "#888888" : PALETTE[Math.max(0, data.classes.indexOf(d["class"])) % PALETTE.length];
      const shape = L.polygon(d.ring.map(at), {color: colour, weight: 2, fillOpacity: 0.2, className: "detection-on-map"})
        .bindTooltip(d["class"] + " " + d.score.toFixed(2));
      shape.on("click", () => show(d));
      return {detection: d, shape: shape};
    });
    const detections = L.featureGroup().addTo(map);
    const slider = document.getElementById("score-filter");
    const shownScore = document.getElementById("score-value");
    const count = document.getElementById("map-count");
    function refresh() {
      const minimum = parseFloat(slider ? slider.value : "0");
      const ticked = Array.from(document.querySelectorAll(".class-filter:checked")).map((box) => box.value);
      let visible = 0;
      shapes.forEach(function (item) {
        const keep = item.detection.score >= minimum && ticked.includes(item.detection["class"]);
        if (keep && !detections.hasLayer(item.shape)) detections.addLayer(item.shape);
        if (!keep && detections.hasLayer(item.shape)) detections.removeLayer(item.shape);
        if (keep) visible += 1;
      });
      if (shownScore) shownScore.textContent = minimum.toFixed(2);
      if (count) count.textContent = visible + " of " + shapes.length + " shown";
    }
    if (slider) slider.addEventListener("input", refresh);
    document.querySelectorAll(".class-filter").forEach((box) => box.addEventListener("change", refresh));
    refresh();
    const bounds = L.latLngBounds([]);
    [outlines, detections].forEach(function (group) {
      if (group.getLayers().length) bounds.extend(group.getBounds());
    });
    if (bounds.isValid()) map.fitBounds(bounds, {padding: [12, 12]});
    else map.setView([0, 0], 2);
  });
})();
