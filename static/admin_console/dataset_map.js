/* The dataset map: image footprints and centre points on a Leaflet map, and the annotated boxes in map
   coordinates (coloured by class). Without a tile URL (offline) the map has no background, but the geometry still
   renders and the view fits it. */
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    const holder = document.getElementById("dataset-map");
    const source = document.getElementById("dataset-map-data");
    if (!holder || !source || !window.L) return;
    const data = JSON.parse(source.textContent);
    const map = L.map(holder, {preferCanvas: true});
    if (data.tiles) L.tileLayer(data.tiles, {maxZoom: 20}).addTo(map);
    const group = L.featureGroup().addTo(map);
    data.features.forEach(function (f) {
      if (f.footprint) L.geoJSON(f.footprint, {style: {color: "#2f6fb0", weight: 1, fillOpacity: 0.08}}).addTo(group);
      if (f.point) {
        const [lon, lat] = f.point.coordinates;
        L.circleMarker([lat, lon], {radius: 4, color: "#b03a48", fillOpacity: 0.9, className: "image-point"})
          .bindTooltip("#" + f.id + " " + f.name).addTo(group);
      }
    });
    const palette = ["#e6194b", "#f58231", "#ffe119", "#3cb44b", "#911eb4", "#f032e6", "#46f0f0", "#9a6324"];
    (data.boxes || []).forEach(function (b) {
      const colour = palette[Math.max(0, (data.classes || []).indexOf(b["class"])) % palette.length];
      L.polygon(b.ring.map(function (p) { return [p[1], p[0]]; }),
                {color: colour, weight: 2, fillOpacity: 0.15, className: "box-on-map"})
        .bindTooltip(b["class"] + " (image #" + b.image + ")").addTo(group);
    });
    map.fitBounds(group.getBounds(), {padding: [12, 12]});
  });
})();
