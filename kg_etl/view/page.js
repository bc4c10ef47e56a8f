/* kg-etl view: draws the graph held in #kg-data with Cytoscape.js, lays it out with d3-force (topics as a
   tree), and shows a node's properties and citations in the side panel. Text from the graph reaches the page
   only through textContent, never as markup. window.kgView exposes counts for scripts and tests. */
(function () {
  'use strict';

  var data = JSON.parse(document.getElementById('kg-data').textContent);
  var KINDS = {
    Document: {color: '#4e79a7', shape: 'round-rectangle', size: 34},
    Chunk: {color: '#9c9490', shape: 'rectangle', size: 12},
    Fact: {color: '#f28e2b', shape: 'diamond', size: 16},
    Entity: {color: '#e15759', shape: 'ellipse', size: 22},
    Topic: {color: '#59a14f', shape: 'triangle', size: 22},
    Category: {color: '#d4a900', shape: 'star', size: 26},
    Keyword: {color: '#b07aa1', shape: 'tag', size: 16},
    Summary: {color: '#76b7b2', shape: 'round-rectangle', size: 14},
    Question: {color: '#ff7f9a', shape: 'hexagon', size: 16},  // not 'vee': a click on its middle misses it
    SchemaNode: {color: '#17becf', shape: 'octagon', size: 22}  // a node of the user's schema (--schema)
  };
  var ORDER = ['Document', 'Chunk', 'Entity', 'SchemaNode', 'Topic', 'Fact', 'Question', 'Category', 'Keyword',
               'Summary'];
  var OTHER = {color: '#888', shape: 'ellipse', size: 16};

  var byKey = {};
  data.nodes.forEach(function (n) { byKey[n.key] = n; });
  var docOf = {};  // chunk key -> its document's key
  data.nodes.forEach(function (n) {
    if (n.kind === 'Chunk' && n.props.doc_id && byKey['Document:' + n.props.doc_id]) {
      docOf[n.key] = 'Document:' + n.props.doc_id;
    }
  });

  var $ = function (id) { return document.getElementById(id); };
  var status = $('status');

  function short(text, max) {
    text = String(text).replace(/\s+/g, ' ').trim();
    return text.length > max ? text.slice(0, max - 1) + '…' : text;
  }

  // -- the graph ---------------------------------------------------------------------------------------------

  var elements = data.nodes.map(function (n) {
    var k = KINDS[n.kind] || OTHER;
    return {group: 'nodes', classes: n.kind,
            data: {id: n.key, kind: n.kind, label: short(n.name, 48), color: k.color, shape: k.shape, size: k.size}};
  });
  data.edges.forEach(function (e, i) {
    var label = e.type === 'RELATED' ? short(e.props.predicate || '', 32) : '';
    elements.push({group: 'edges', classes: e.type, data: {id: 'e' + i, source: e.source, target: e.target,
                                                           type: e.type, label: label, index: i}});
  });

  var big = data.nodes.length > 800;
  var cy = cytoscape({
    container: $('graph'),
    elements: elements,
    layout: {name: 'preset'},
    minZoom: 0.05,
    maxZoom: 4,
    textureOnViewport: big,
    hideEdgesOnViewport: big,
    style: [
      {selector: 'node', style: {
        'background-color': 'data(color)', shape: 'data(shape)', width: 'data(size)', height: 'data(size)',
        label: 'data(label)', 'font-size': 10, color: '#333', 'text-valign': 'bottom', 'text-margin-y': 3,
        'text-wrap': 'ellipsis', 'text-max-width': '140px', 'min-zoomed-font-size': 7}},
      {selector: 'node.Document', style: {'font-size': 12, 'font-weight': 'bold', 'min-zoomed-font-size': 4}},
      {selector: 'node.Topic', style: {'font-size': 11}},
      {selector: 'edge', style: {width: 1, 'line-color': '#cfcfcf', 'curve-style': 'straight', opacity: 0.9}},
      {selector: 'edge.RELATED', style: {
        width: 1.6, 'line-color': '#e15759', 'target-arrow-shape': 'triangle', 'target-arrow-color': '#e15759',
        'arrow-scale': 0.8, label: 'data(label)', 'font-size': 8, color: '#9a2a2b', 'text-rotation': 'autorotate',
        'text-background-color': '#fff', 'text-background-opacity': 0.85, 'text-background-padding': '1px',
        'min-zoomed-font-size': 6}},
      {selector: 'edge.SUBTOPIC_OF', style: {
        width: 1.6, 'line-color': '#59a14f', 'target-arrow-shape': 'triangle', 'target-arrow-color': '#59a14f'}},
      {selector: 'edge.meta', style: {'line-style': 'dashed', 'line-dash-pattern': [4, 3]}},
      {selector: '.collapsed, .off, .pending', style: {display: 'none'}},
      {selector: '.faded', style: {opacity: 0.12}},
      {selector: 'node.match', style: {'border-width': 3, 'border-color': '#111', 'z-index': 10}},
      {selector: 'node:selected', style: {'border-width': 3, 'border-color': '#111', 'overlay-opacity': 0}},
      {selector: 'edge:selected', style: {width: 3, 'line-color': '#333', 'target-arrow-color': '#333'}}
    ]
  });

  // -- chunks, collapsed into their documents ----------------------------------------------------------------
  // A hidden chunk's relationships are drawn from its document instead (dashed, one per kind of link), so
  // that what a document's chunks hold hangs on the document until its chunks are shown.

  var open = {};  // document key -> its chunks are shown
  var real = {};  // source|target|type of every relationship: a dashed link never doubles a real one
  data.edges.forEach(function (e) { real[e.source + '|' + e.target + '|' + e.type] = true; });

  function chunksOpen(docKey) { return !!open[docKey]; }

  function applyChunks() {
    cy.batch(function () {
      cy.remove('edge.meta');
      var meta = {};
      cy.nodes('.Chunk').forEach(function (chunk) {
        var doc = docOf[chunk.id()];
        var shown = !doc || chunksOpen(doc);
        chunk.toggleClass('collapsed', !shown);
        if (shown) { return; }
        chunk.connectedEdges().forEach(function (edge) {
          var out = edge.source().id() === chunk.id();
          var other = out ? edge.target() : edge.source();
          if (other.hasClass('Chunk') || other.id() === doc) { return; }
          var s = out ? doc : other.id(), t = out ? other.id() : doc, type = edge.data('type');
          var key = s + '|' + t + '|' + type;
          if (!meta[key] && !real[key]) {
            meta[key] = {group: 'edges', classes: 'meta ' + type,
                         data: {id: 'meta|' + key, source: s, target: t, type: type, label: '', meta: true}};
          }
        });
      });
      cy.add(Object.keys(meta).map(function (k) { return meta[k]; }));
    });
    var all = cy.nodes('.Chunk').length;
    var hidden = cy.nodes('.Chunk.collapsed').length;
    $('chunks').textContent = hidden ? 'Show all chunks' : 'Hide chunks';
    $('chunks').disabled = all === 0;
    renderLegend();
  }

  function placeChunks(docKey) {
    var doc = cy.getElementById(docKey);
    var chunks = cy.nodes('.Chunk').filter(function (c) { return docOf[c.id()] === docKey; });
    var n = chunks.length, r = 40 + 8 * n, p = doc.position();
    chunks.sort(function (a, b) { return (byKey[a.id()].props.index || 0) - (byKey[b.id()].props.index || 0); })
      .forEach(function (c, i) {
        var angle = 2 * Math.PI * i / Math.max(n, 1);
        c.position({x: p.x + r * Math.cos(angle), y: p.y + r * Math.sin(angle)});
      });
  }

  function toggleDocument(docKey) {
    open[docKey] = !open[docKey];
    if (open[docKey]) { placeChunks(docKey); }
    applyChunks();
  }

  $('chunks').addEventListener('click', function () {
    var anyHidden = cy.nodes('.Chunk.collapsed').nonempty();
    cy.nodes('.Document').forEach(function (d) {
      var had = !!open[d.id()];
      open[d.id()] = anyHidden;
      if (anyHidden && !had) { placeChunks(d.id()); }
    });
    applyChunks();
  });

  // -- layout: d3-force for the graph, a tree for the topics -------------------------------------------------

  function seeded(seed) {  // the same page lays out the same way every time
    return function () { seed = (seed * 1664525 + 1013904223) % 4294967296; return seed / 4294967296; };
  }

  // What is shown, from the page's own classes: Cytoscape's visible() lags a class change until the next frame.
  function isShown(n) { return !n.hasClass('collapsed') && !n.hasClass('off'); }

  function visible() { return cy.nodes().filter(isShown); }

  function forceLayout(nodes, done) {
    var index = {};
    var simNodes = nodes.map(function (n, i) { index[n.id()] = i; return {id: n.id()}; });
    var links = [];
    nodes.connectedEdges().forEach(function (e) {
      var s = index[e.source().id()], t = index[e.target().id()];
      if (s !== undefined && t !== undefined) {
        links.push({source: s, target: t, hub: e.source().hasClass('Document') || e.target().hasClass('Document')});
      }
    });
    // 300 steps (d3's default cooling) up to 1,000 nodes, fewer above: each costs O(n log n) (Barnes-Hut).
    var steps = nodes.length > 1000 ? 180 : 300;
    // Small graphs get room for their labels; large ones are read by zooming in.
    var spread = nodes.length < 150 ? 1.5 : nodes.length < 600 ? 1.25 : 1;
    var sim = d3.forceSimulation(simNodes).randomSource(seeded(7))
      .alphaDecay(1 - Math.pow(0.001, 1 / steps))
      .force('link', d3.forceLink(links).distance(function (l) { return spread * (l.hub ? 90 : 55); }).strength(0.6))
      .force('charge', d3.forceManyBody().strength(-200 * spread).distanceMax(1200 * spread).theta(0.9))
      .force('x', d3.forceX(0).strength(0.05))
      .force('y', d3.forceY(0).strength(0.05))
      .stop();
    var total = Math.ceil(Math.log(sim.alphaMin()) / Math.log(1 - sim.alphaDecay()));
    var ticks = 0;
    (function step() {
      var start = performance.now();
      while (ticks < total && performance.now() - start < 50) { sim.tick(); ticks += 1; }
      if (ticks < total) {
        status.textContent = 'Laying out ' + nodes.length + ' nodes… ' + Math.round(100 * ticks / total) + ' %';
        setTimeout(step, 0);
        return;
      }
      cy.batch(function () {
        simNodes.forEach(function (d) { cy.getElementById(d.id).position({x: d.x, y: d.y}); });
      });
      done();
    })();
  }

  function treeLayout(topics, beside) {
    if (topics.empty()) { return; }
    var edges = topics.connectedEdges('.SUBTOPIC_OF').filter(function (e) {
      return topics.contains(e.source()) && topics.contains(e.target());
    });
    var roots = topics.filter(function (t) {
      return edges.filter(function (e) { return e.source().id() === t.id(); }).empty();
    });
    var perLevel = {};
    topics.forEach(function (t) { var l = byKey[t.id()].props.level || 1; perLevel[l] = (perLevel[l] || 0) + 1; });
    var levels = Object.keys(perLevel).map(function (l) { return perLevel[l]; });
    var depth = levels.length + 1;
    // Room for a label (~140 px) per topic on the widest level, but no wider than the rest of the graph (at
    // least 800 px): a wide tree would shrink everything else when the page fits both.
    var room = beside ? Math.max(800, beside.w) : 6000;
    var width = Math.max(300, Math.min(room, 140 * Math.max.apply(null, levels)));
    var height = Math.max(110 * depth, beside ? beside.h / 2 : 0);
    var x1 = beside ? beside.x2 + 160 : 0, y1 = beside ? beside.y1 : 0;
    topics.union(edges).layout({name: 'breadthfirst', directed: false, roots: roots, animate: false, fit: false,
                                spacingFactor: 1, avoidOverlap: true,
                                boundingBox: {x1: x1, y1: y1, w: width, h: height}}).run();
  }

  function layout() {
    kgView.ready = false;
    document.body.dataset.ready = '0';
    var started = performance.now();
    var nodes = visible();
    var topics = nodes.filter('.Topic'), rest = nodes.not('.Topic');
    forceLayout(rest, function () {
      cy.nodes('.pending').removeClass('pending');  // first: a node not displayed has no bounding box
      treeLayout(topics, rest.nonempty() ? rest.boundingBox() : null);
      cy.fit(visible(), 30);
      summary();
      kgView.layoutMs = performance.now() - started;
      kgView.ready = true;
      document.body.dataset.ready = '1';
    });
  }

  $('relayout').addEventListener('click', layout);

  function summary() {
    var text = data.nodes.length + ' nodes, ' + data.edges.length + ' relationships';
    if (data.truncated) {
      text += ' — limit of ' + data.selection.limit + ' nodes reached: more is within reach (raise --limit, ' +
              'or choose with --document, --entity or --topic)';
    }
    status.textContent = text;
    status.classList.toggle('warn', !!data.truncated);
  }

  // -- the legend: kinds with their counts; a click hides or shows a kind -------------------------------------

  var hiddenKinds = {};

  function renderLegend() {
    var legend = $('legend');
    legend.textContent = '';
    var counts = {};
    data.nodes.forEach(function (n) { counts[n.kind] = (counts[n.kind] || 0) + 1; });
    Object.keys(counts).sort(function (a, b) { return rank(a) - rank(b); }).forEach(function (kind) {
      var row = el('div', null, null);
      row.dataset.kind = kind;
      var swatch = el('span', 'swatch', null);
      swatch.style.background = (KINDS[kind] || OTHER).color;
      row.appendChild(swatch);
      row.appendChild(el('span', null, kind));
      row.appendChild(el('span', 'count', String(counts[kind])));
      var off = kind === 'Chunk' ? cy.nodes('.Chunk.collapsed').nonempty() : !!hiddenKinds[kind];
      row.classList.toggle('off', off);
      row.title = kind === 'Chunk' ? 'Show or hide every chunk' : 'Show or hide every ' + kind.toLowerCase();
      row.addEventListener('click', function () {
        if (kind === 'Chunk') { $('chunks').click(); return; }
        hiddenKinds[kind] = !hiddenKinds[kind];
        cy.nodes('.' + kind).toggleClass('off', hiddenKinds[kind]);
        renderLegend();
      });
      legend.appendChild(row);
    });
  }

  function rank(kind) { var i = ORDER.indexOf(kind); return i < 0 ? ORDER.length : i; }

  // -- the panel: a node's properties and citations ----------------------------------------------------------

  var panel = $('panel');

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== null && text !== undefined) { node.textContent = text; }
    return node;
  }

  function pages(t) {
    if (t.page_start === null || t.page_start === undefined) { return 'pages unknown'; }
    return t.page_start === t.page_end || t.page_end === null ? 'p. ' + t.page_start
      : 'pp. ' + t.page_start + '–' + t.page_end;
  }

  function value(v) {
    if (v === null || v === undefined) { return '—'; }
    if (Array.isArray(v)) { return v.map(value).join(', '); }
    if (typeof v === 'object') { return JSON.stringify(v); }
    return String(v);
  }

  function citation(chunkId, spans) {
    var t = data.texts[chunkId];
    var box = el('div', 'citation', null);
    if (!t) { box.appendChild(el('div', 'cite-head', 'chunk ' + chunkId + ' (not on this page)')); return box; }
    var where = (t.doc_name || 'unknown document') + ', ' + pages(t) + (t.index === null ? '' : ', chunk ' + t.index);
    box.appendChild(el('div', 'cite-head', where));
    var quote = el('blockquote', null, null);
    var at = 0;
    (spans || []).forEach(function (span) {
      quote.appendChild(document.createTextNode(t.text.slice(at, span[0])));
      quote.appendChild(el('mark', null, t.text.slice(span[0], span[1])));
      at = span[1];
    });
    quote.appendChild(document.createTextNode(t.text.slice(at)));
    box.appendChild(quote);
    return box;
  }

  function properties(props) {
    var table = el('table', null, null);
    Object.keys(props).sort().forEach(function (k) {
      var row = el('tr', null, null);
      row.appendChild(el('td', 'key', k));
      row.appendChild(el('td', null, value(props[k])));
      table.appendChild(row);
    });
    return table;
  }

  function heading(kind, name) {
    panel.textContent = '';
    var badge = el('span', 'kind', kind);
    badge.style.background = (KINDS[kind] || OTHER).color;
    panel.appendChild(badge);
    panel.appendChild(el('h2', null, name));
  }

  function showNode(key) {
    var n = byKey[key];
    if (!n) { return; }
    heading(n.kind, n.name);
    panel.dataset.key = key;
    if (n.kind === 'Document') {
      var chunks = cy.nodes('.Chunk').filter(function (c) { return docOf[c.id()] === key; }).length;
      if (chunks) {
        var button = el('button', null, (chunksOpen(key) ? 'Hide its ' : 'Show its ') + chunks + ' chunks');
        button.addEventListener('click', function () { toggleDocument(key); showNode(key); });
        panel.appendChild(button);
      }
    }
    if (n.kind === 'Chunk') {
      panel.appendChild(el('h3', null, 'Text'));
      panel.appendChild(citation(n.id, []));
    }
    var cited = data.citations[key] || [];
    if (cited.length) {
      panel.appendChild(el('h3', null, 'Citations'));
      cited.forEach(function (c) { panel.appendChild(citation(c.chunk, c.spans)); });
      var more = data.more_citations[key];
      if (more) { panel.appendChild(el('p', 'more', 'and ' + more + ' more chunks')); }
    }
    panel.appendChild(el('h3', null, 'Properties'));
    panel.appendChild(properties(n.props));
  }

  function showEdge(edge) {
    var type = edge.data('type');
    heading(type, byKey[edge.source().id()].name + ' → ' + byKey[edge.target().id()].name);
    panel.dataset.key = edge.id();
    if (edge.data('meta')) {
      panel.appendChild(el('p', 'hint', 'Through the document\'s chunks: show its chunks to see each link.'));
      return;
    }
    var e = data.edges[edge.data('index')];
    var fact = e.props.fact_id ? byKey['Fact:' + e.props.fact_id] : null;
    if (fact) {
      panel.appendChild(el('h3', null, 'Stated by'));
      panel.appendChild(el('p', null, fact.name));
      (data.citations[fact.key] || []).forEach(function (c) { panel.appendChild(citation(c.chunk, c.spans)); });
    }
    panel.appendChild(el('h3', null, 'Properties'));
    panel.appendChild(properties(e.props));
  }

  cy.on('tap', 'node', function (evt) { showNode(evt.target.id()); });
  cy.on('tap', 'edge', function (evt) { showEdge(evt.target); });

  // -- search: nodes whose name (or id) holds the text; Enter goes to the next one -----------------------------

  var matches = [], current = -1;

  function search() {
    var q = $('search').value.trim().toLowerCase();
    cy.elements().removeClass('match faded');
    matches = [];
    current = -1;
    if (!q) { $('matches').textContent = ''; return; }
    matches = data.nodes.filter(function (n) {
      return n.name.toLowerCase().indexOf(q) >= 0 || n.id.toLowerCase() === q;
    }).map(function (n) { return n.key; });
    $('matches').textContent = matches.length + (matches.length === 1 ? ' match' : ' matches');
    if (!matches.length) { return; }
    cy.batch(function () {
      cy.elements().addClass('faded');
      matches.forEach(function (k) { cy.getElementById(k).removeClass('faded').addClass('match'); });
    });
  }

  function focus(key) {
    var node = cy.getElementById(key);
    if (node.empty()) { return; }
    var doc = docOf[key];
    if (doc && !chunksOpen(doc)) { toggleDocument(doc); }
    if (node.hasClass('off')) { hiddenKinds[byKey[key].kind] = false; cy.nodes('.' + byKey[key].kind).removeClass('off'); renderLegend(); }
    cy.nodes(':selected').unselect();
    node.select();
    cy.animate({center: {eles: node}, zoom: Math.max(cy.zoom(), 1.2)}, {duration: 250});
    showNode(key);
  }

  $('search').addEventListener('input', search);
  $('search').addEventListener('keydown', function (evt) {
    if (evt.key !== 'Enter' || !matches.length) { return; }
    current = (current + 1) % matches.length;
    focus(matches[current]);
  });

  // -- for scripts and tests: counts and positions, read-only ---------------------------------------------------

  var kgView = window.kgView = {
    nodes: data.nodes.length,
    edges: data.edges.length,
    ready: false,
    shown: function () {
      return {nodes: visible().length, edges: cy.edges().filter(function (e) {
        return !e.data('meta') && isShown(e.source()) && isShown(e.target());
      }).length};
    },
    at: function (key) {  // where a node is on the screen, for a click
      var p = cy.getElementById(key).renderedPosition(), box = $('graph').getBoundingClientRect();
      return {x: box.left + p.x, y: box.top + p.y};
    },
    layoutMs: null,
    cy: cy,  // the Cytoscape.js instance, for scripts (https://js.cytoscape.org)
    selected: function () { return cy.nodes(':selected').map(function (n) { return n.id(); }); },
    focus: focus
  };
  document.body.dataset.nodes = String(data.nodes.length);
  document.body.dataset.edges = String(data.edges.length);

  // Nothing is drawn until the first layout is done: drawing every node piled at one point costs as much as a
  // third of the layout's time on a large page, for a picture nobody needs.
  cy.nodes().addClass('pending');
  applyChunks();
  layout();
})();
