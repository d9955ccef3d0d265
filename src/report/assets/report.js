// weightmap HTML report. Inlined into the page by src/report/html.rs; reads the JSON in
// <script id="wm-data">. Renders lazily: a module's children get DOM rows only once it
// is opened, and match lines are drawn only for rows in view, so that models with
// thousands of tensors stay responsive. All text goes in through textContent, never
// innerHTML, so names cannot inject markup.
(function () {
  'use strict';
  const D = JSON.parse(document.getElementById('wm-data').textContent);
  const GOOD = D.bands.good, FAIR = D.bands.fair;
  // Filtered views open every subtree with a hit when there are at most this many hits;
  // above it, subtrees stay closed (with hit counts) so the DOM stays small.
  const AUTO_EXPAND_LIMIT = 400;
  // Most top-level counterpart modules named on a module row (see counterpartText).
  const MAX_SPREAD_SHOWN = 3;
  // Indentation per module level, in pixels.
  const INDENT = 16;
  // Each filter: key, label, which tensor rows it shows, and its count as the terminal's
  // summary gives it (D.counts, computed once in Rust by report::counts): the marks
  // partition the mappings, so an ambiguous transpose is ambiguous, not transformed.
  const FILTERS = [
    ['unmatched', 'Unmatched', (t) => !t.m, (c) => c.unmatched_source + ' source, ' + c.unmatched_target + ' target'],
    ['low', 'Needs review', (t) => t.m && t.m.lo, (c) => String(c.needs_review)],
    ['transformed', 'Transformed', (t) => t.m && t.m.tr !== 'exact' && !t.m.am, (c) => String(c.transpose + c.reshape)],
    ['ambiguous', 'Ambiguous', (t) => t.m && !!t.m.am, (c) => String(c.ambiguous)],
  ];

  const $ = (id) => document.getElementById(id);
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  const band = (s) => (s >= GOOD ? 'good' : s >= FAIR ? 'fair' : 'poor');
  const shapeText = (s) => '[' + s.join(',') + ']';
  const fmt = (x) => (x === null || x === undefined ? '–' : Number(x).toFixed(3));

  // ---- model: trees, tensors, matches ----
  function newNode(name, parent) {
    const path = parent && parent.path ? parent.path + '.' + name : name;
    return {
      name, path, parent, level: parent ? parent.level + 1 : 0, kids: [], kidIndex: new Map(), tensors: [],
      total: 0, matched: 0, cp: null, spread: [], open: !parent, rendered: false, row: null, box: null, hits: 0, mark: null,
    };
  }
  function makeSide(key, list) {
    const root = newNode('', null);
    const tensors = list.map((x, i) => {
      const name = x[0];
      const dot = name.lastIndexOf('.');
      const mod = dot < 0 ? '' : name.slice(0, dot);
      let node = root;
      if (mod) {
        for (const part of mod.split('.')) {
          let c = node.kidIndex.get(part);
          if (!c) {
            c = newNode(part, node);
            node.kidIndex.set(part, c);
            node.kids.push(c);
          }
          node = c;
        }
      }
      const t = { i, side: key, name, leaf: name.slice(dot + 1), mod, shape: x[1], buf: x[2] === 1, node, m: null, why: null, row: null, pass: true };
      node.tensors.push(t);
      return t;
    });
    return { key, root, tensors, pane: null, box: null };
  }
  const S = makeSide('s', D.s), T = makeSide('t', D.t);
  const M = D.m.map((x, k) => {
    const m = { k, s: S.tensors[x.s], t: T.tensors[x.t], sc: x.sc, cf: x.cf, tr: x.tr, ty: x.ty, rs: x.rs, dt: x.dt, am: x.am, lo: x.lo, b: x.b, al: x.al };
    m.s.m = m;
    m.t.m = m;
    return m;
  });
  // Conversions (split, concat, stack): each relates every source to every target it
  // feeds; one line per (source, target), drawn dashed beside the one-to-one lines.
  const CV = (D.cv || []).map((pairs, k) => ({ k, pairs: pairs.map(([s, t]) => [S.tensors[s], T.tensors[t]]), text: D.rel[k] }));
  for (const c of CV) for (const [s, t] of c.pairs) s.cv = t.cv = c;
  for (const [i, why] of D.us) S.tensors[i].why = why;
  for (const [i, why] of D.ut) T.tensors[i].why = why;

  function commonModule(a, b) {
    const x = a.split('.'), y = b.split('.');
    const out = [];
    for (let k = 0; k < Math.min(x.length, y.length) && x[k] === y[k]; k++) out.push(x[k]);
    return out.join('.');
  }
  function summarize(side) {
    for (const t of side.tensors) {
      const other = t.m ? (side.key === 's' ? t.m.t : t.m.s) : null;
      for (let n = t.node; n; n = n.parent) {
        n.total++;
        if (other) {
          n.matched++;
          n.cp = n.cp === null ? other.mod : commonModule(n.cp, other.mod);
          const first = other.mod.split('.')[0];
          if (n.spread.length <= MAX_SPREAD_SHOWN && !n.spread.includes(first)) n.spread.push(first);
        }
      }
    }
  }
  summarize(S);
  summarize(T);
  function allNodes(side) {
    const out = [];
    const stack = [side.root];
    while (stack.length) {
      const n = stack.pop();
      out.push(n);
      for (let k = n.kids.length - 1; k >= 0; k--) stack.push(n.kids[k]);
    }
    return out;
  }

  // ---- filters and search ----
  const active = new Set();
  let query = '';
  let savedOpen = null; // open state before a filter or search began, restored after
  const filtering = () => active.size > 0 || query !== '';
  function passes(t) {
    if (query && !t.name.toLowerCase().includes(query)) return false;
    if (!active.size) return true;
    for (const [key, , test] of FILTERS) if (active.has(key) && test(t)) return true;
    return false;
  }
  function computeHits(side) {
    for (const n of allNodes(side)) n.hits = 0;
    let total = 0;
    for (const t of side.tensors) {
      t.pass = passes(t);
      if (t.pass) {
        total++;
        for (let n = t.node; n; n = n.parent) n.hits++;
      }
    }
    return total;
  }

  // ---- rendering ----
  let rowId = 0;
  function moduleRow(side, node) {
    const row = el('div', 'row mod');
    row.wm = { node, side };
    row.wmId = ++rowId;
    row.style.paddingLeft = 6 + (node.level - 1) * INDENT + 'px';
    row.appendChild(el('span', 'tw', node.open ? '▾' : '▸'));
    const mk = node.matched === node.total ? ['✓', 'good'] : node.matched > 0 ? ['◐', 'fair'] : ['✗', 'poor'];
    row.appendChild(el('span', 'mk ' + mk[1], mk[0]));
    row.appendChild(el('span', 'nm', node.name));
    const count = filtering() ? node.hits + ' shown · ' + node.matched + '/' + node.total + ' matched' : node.matched + '/' + node.total + ' matched';
    row.appendChild(el('span', 'cnt', count));
    if (node.cp !== null) row.appendChild(el('span', 'cp', '→ ' + counterpartText(node)));
    row.title = node.path;
    node.row = row;
    return row;
  }
  // The common counterpart module, or when that is the root, the top-level modules the
  // tensors went to (as the terminal tree shows them).
  function counterpartText(node) {
    if (node.cp) return node.cp;
    if (node.spread.length > MAX_SPREAD_SHOWN) return 'more than ' + MAX_SPREAD_SHOWN + ' top-level modules';
    return node.spread.map((x) => x || '(top level)').join(' + ');
  }
  function badgeOf(t) {
    if (t.buf) return ['buf', 'buf'];
    if (t.leaf === 'weight') return ['W', 'W'];
    if (t.leaf === 'bias') return ['B', 'B'];
    return ['P', 'P'];
  }
  function tensorRow(side, t) {
    const row = el('div', 'row ten');
    row.wm = { t, side };
    row.wmId = ++rowId;
    row.dataset.name = t.name;
    row.style.paddingLeft = 6 + t.node.level * INDENT + 14 + 'px';
    const [label, cls] = badgeOf(t);
    row.appendChild(el('span', 'badge ' + cls, label));
    row.appendChild(el('span', 'nm', t.leaf));
    row.appendChild(el('span', 'sh', shapeText(t.shape)));
    const m = t.m;
    if (m) {
      row.appendChild(el('span', 'pill ' + band(m.sc), m.sc.toFixed(2)));
      if (m.tr !== 'exact') row.appendChild(el('span', 'tag ' + m.tr, m.tr));
      if (m.am) row.appendChild(el('span', 'tag ambiguous', 'ambiguous'));
      if (m.lo) row.appendChild(el('span', 'tag low', 'needs review'));
      row.title = t.name + '  →  ' + (side.key === 's' ? m.t.name : m.s.name);
    } else if (t.cv) {
      row.appendChild(el('span', 'tag conv', 'converted'));
      row.title = t.name + '\n' + t.cv.text;
    } else {
      row.appendChild(el('span', 'tag unmatched', 'unmatched'));
      row.title = t.name + (t.why ? '\nunmatched: ' + t.why : '');
    }
    if (selected && (selected === t || (selected.s && (selected.s === t || selected.t === t)))) row.classList.add('sel');
    t.row = row;
    return row;
  }
  function renderInto(side, node, box) {
    const f = filtering();
    const frag = document.createDocumentFragment();
    for (const t of node.tensors) if (!f || t.pass) frag.appendChild(tensorRow(side, t));
    for (const c of node.kids) {
      if (f && !c.hits) continue;
      frag.appendChild(moduleRow(side, c));
      const kb = el('div', 'kids');
      c.box = kb;
      frag.appendChild(kb);
      if (c.open) {
        renderInto(side, c, kb);
        c.rendered = true;
      } else {
        kb.hidden = true;
        c.rendered = false;
      }
    }
    box.appendChild(frag);
  }
  function renderSide(side, title) {
    for (const n of allNodes(side)) {
      n.row = null;
      n.box = null;
      n.rendered = false;
    }
    for (const t of side.tensors) t.row = null;
    side.pane.textContent = '';
    side.pane.appendChild(el('h2', null, title));
    const box = el('div', 'kids');
    side.box = box;
    side.root.box = box;
    side.root.rendered = true;
    side.pane.appendChild(box);
    renderInto(side, side.root, box);
  }
  function sideTitle(key) {
    const info = key === 's' ? D.source : D.target;
    return (key === 's' ? 'SOURCE  ' : 'TARGET  ') + info.path + '  (' + info.tensors + ' tensors)';
  }
  function renderAll() {
    renderSide(S, sideTitle('s'));
    renderSide(T, sideTitle('t'));
    scheduleLines();
  }
  function setOpen(side, node, open) {
    node.open = open;
    if (!node.row) return;
    if (open && !node.rendered && node.box) {
      renderInto(side, node, node.box);
      node.rendered = true;
    }
    if (node.box) node.box.hidden = !open;
    node.row.firstChild.textContent = open ? '▾' : '▸';
  }
  function expandAll() {
    for (const side of [S, T]) for (const n of allNodes(side)) n.open = true;
    renderAll();
  }
  function collapseAll() {
    for (const side of [S, T]) for (const n of allNodes(side)) n.open = !n.parent;
    renderAll();
  }
  // Opens the ancestors of t (rendering them as needed); returns its row, if shown.
  function reveal(t) {
    const side = t.side === 's' ? S : T;
    const chain = [];
    for (let n = t.node; n && n.parent; n = n.parent) chain.unshift(n);
    for (const n of chain) if (!n.open) setOpen(side, n, true);
    return t.row;
  }

  // ---- match lines ----
  const svg = $('lines');
  const gutter = $('gutter');
  let linesQueued = false;
  function scheduleLines() {
    if (linesQueued) return;
    linesQueued = true;
    requestAnimationFrame(() => {
      linesQueued = false;
      drawLines();
    });
  }
  // The row that stands for t in view: its own, or that of its closed ancestor nearest
  // the root; null when t is filtered out.
  function repRow(t) {
    if (filtering() && !t.pass) return null;
    let rep = t.row;
    for (let n = t.node; n && n.parent; n = n.parent) if (!n.open) rep = n.row;
    return rep;
  }
  function rowY(row, pane) {
    return row.offsetTop - pane.scrollTop + row.offsetHeight / 2;
  }
  let drawAll = false; // the self-test draws lines out of view too, to count them
  function drawLines() {
    const h = gutter.clientHeight, w = gutter.clientWidth;
    svg.setAttribute('viewBox', '0 0 ' + w + ' ' + h);
    const pairs = new Map();
    const ys = new Map();
    const yOf = (row, pane) => {
      let y = ys.get(row);
      if (y === undefined) {
        y = rowY(row, pane);
        ys.set(row, y);
      }
      return y;
    };
    for (const m of M) {
      const a = repRow(m.s), b = repRow(m.t);
      if (!a || !b || !a.isConnected || !b.isConnected) continue;
      const ya = yOf(a, S.pane), yb = yOf(b, T.pane);
      const inA = ya >= 0 && ya <= h, inB = yb >= 0 && yb <= h;
      if (!inA && !inB && !drawAll) continue;
      const key = a.wmId + ':' + b.wmId;
      let p = pairs.get(key);
      if (!p) {
        p = { ya, yb, both: inA && inB, n: 0, min: 1, sel: false, cv: false };
        pairs.set(key, p);
      }
      p.n++;
      p.min = Math.min(p.min, m.sc);
      if (selected === m) p.sel = true;
    }
    for (const c of CV) {
      for (const [s, t] of c.pairs) {
        const a = repRow(s), b = repRow(t);
        if (!a || !b || !a.isConnected || !b.isConnected) continue;
        const ya = yOf(a, S.pane), yb = yOf(b, T.pane);
        const inA = ya >= 0 && ya <= h, inB = yb >= 0 && yb <= h;
        if (!inA && !inB && !drawAll) continue;
        const key = 'c' + a.wmId + ':' + b.wmId;
        let p = pairs.get(key);
        if (!p) {
          p = { ya, yb, both: inA && inB, n: 0, min: 1, sel: false, cv: true };
          pairs.set(key, p);
        }
        p.n++;
        if (selected === s || selected === t) p.sel = true;
      }
    }
    const paths = [];
    for (const p of pairs.values()) {
      const ya = Math.max(-4, Math.min(h + 4, p.ya)), yb = Math.max(-4, Math.min(h + 4, p.yb));
      const d = 'M0,' + ya.toFixed(1) + ' C' + (w / 2) + ',' + ya.toFixed(1) + ' ' + (w / 2) + ',' + yb.toFixed(1) + ' ' + w + ',' + yb.toFixed(1);
      const path = document.createElementNS('http://www.w3.org/2000/svg', 'path');
      path.setAttribute('d', d);
      path.setAttribute('stroke', p.cv ? 'var(--conv)' : 'var(--' + band(p.min) + ')');
      if (p.cv) {
        path.setAttribute('class', 'conv');
        path.setAttribute('stroke-dasharray', '5 3');
      }
      path.setAttribute('stroke-width', String((p.sel ? 3 : 1.2) + Math.log2(p.n) * 0.8));
      // Dashed lines fade less: their gaps already thin them.
      path.setAttribute('stroke-opacity', p.sel ? '1' : p.both ? '0.75' : p.cv ? '0.5' : '0.3');
      paths.push([p.sel, path]);
    }
    // The selected line last, so it is drawn on top.
    paths.sort((x, y) => Number(x[0]) - Number(y[0]));
    svg.textContent = '';
    for (const [, path] of paths) svg.appendChild(path);
  }

  // ---- details ----
  let selected = null; // a match, or an unmatched tensor
  function bar(v) {
    const b = el('span', 'bar');
    const fill = el('span', band(v === null ? 0 : v));
    fill.style.width = (v === null ? 0 : Math.max(0, Math.min(1, v)) * 100).toFixed(1) + '%';
    b.appendChild(fill);
    return b;
  }
  function bdRow(table, cls, label, score, weight, contribution) {
    const tr = el('tr', cls);
    tr.appendChild(el('td', null, label));
    tr.appendChild(el('td', 'v', score === null ? 'unknown' : fmt(score)));
    const tdBar = el('td');
    tdBar.appendChild(bar(score));
    tr.appendChild(tdBar);
    tr.appendChild(el('td', null, weight));
    tr.appendChild(el('td', null, contribution));
    table.appendChild(tr);
  }
  function breakdownTable(m) {
    const [total, shape, name, hier, tokens, edit, substring, depth, context, order, relation] = m.b;
    const W = D.weights, sub = D.sub;
    const table = el('table', 'bd');
    const head = el('tr');
    for (const h of ['part', 'score', '', 'weight', 'contribution']) head.appendChild(el('th', null, h));
    table.appendChild(head);
    bdRow(table, 'bd-row', 'shape (' + relation + ')', shape, '× ' + fmt(W.shape), fmt(shape * W.shape));
    bdRow(table, 'bd-row', 'name', name, '× ' + fmt(W.name), fmt(name * W.name));
    bdRow(table, 'bd-row sub', 'tokens (Jaccard)', tokens, '× ' + sub.name[0].toFixed(2) + ' of name', '');
    bdRow(table, 'bd-row sub', 'edit distance', edit, '× ' + sub.name[1].toFixed(2) + ' of name', '');
    bdRow(table, 'bd-row sub', 'common substring', substring, '× ' + sub.name[2].toFixed(2) + ' of name', '');
    bdRow(table, 'bd-row', 'hierarchy', hier, '× ' + fmt(W.hierarchy), fmt(hier * W.hierarchy));
    // Without an order the scorer renormalizes depth and path over their own weights.
    const hsum = sub.hier[0] + sub.hier[1] + (order === null ? 0 : sub.hier[2]);
    bdRow(table, 'bd-row sub', 'depth', depth, '× ' + (sub.hier[0] / hsum).toFixed(2) + ' of hierarchy', '');
    bdRow(table, 'bd-row sub', 'path (matched parents)', context, '× ' + (sub.hier[1] / hsum).toFixed(2) + ' of hierarchy', '');
    bdRow(table, 'bd-row sub', 'order', order, order === null ? 'not counted' : '× ' + (sub.hier[2] / hsum).toFixed(2) + ' of hierarchy', '');
    const tr = el('tr', 'bd-total');
    tr.appendChild(el('td', null, 'total'));
    tr.appendChild(el('td', 'v', fmt(total)));
    const tdBar = el('td');
    tdBar.appendChild(bar(total));
    tr.appendChild(tdBar);
    tr.appendChild(el('td'));
    tr.appendChild(el('td', null, fmt(total)));
    table.appendChild(tr);
    return table;
  }
  function showDetails(sel) {
    const box = $('selection');
    box.textContent = '';
    if (!sel) {
      box.appendChild(el('p', 'hint', 'Click a tensor to see its match and score breakdown.'));
      return;
    }
    if (sel.s) {
      const m = sel;
      const h = el('h3');
      h.appendChild(el('span', 'd-source', m.s.name));
      h.appendChild(document.createTextNode('  →  '));
      h.appendChild(el('span', 'd-target', m.t.name));
      box.appendChild(h);
      const meta = el('div', 'meta');
      meta.appendChild(el('span', 'pill ' + band(m.sc), 'score ' + fmt(m.sc)));
      meta.appendChild(document.createTextNode(
        '  confidence ' + fmt(m.cf) + ' · ' + m.tr + ' · ' + m.ty + ' · ' + shapeText(m.s.shape) +
        (m.tr === 'exact' ? '' : ' → ' + shapeText(m.t.shape)) + ' · decided by ' + String(m.rs).replace(/_/g, ' ') +
        (m.dt ? ': ' + m.dt : '')));
      box.appendChild(meta);
      if (m.am) box.appendChild(el('div', 'warn', 'Ambiguous: ' + m.am));
      if (m.lo) box.appendChild(el('div', 'muted', 'Needs review: flagged ambiguous, or decided by scores with a thin margin (the conservative strategy would not take it).'));
      const cols = el('div', 'cols');
      cols.appendChild(breakdownTable(m));
      const alts = el('div');
      alts.appendChild(el('div', 'muted', m.al.length ? 'Alternatives (score, difference, who took it):' : 'No alternative candidates.'));
      const ol = el('ol', 'alts');
      for (const [ti, name, score] of m.al) {
        const li = el('li');
        const a = el('a', null, name);
        if (ti >= 0) a.addEventListener('click', () => select(T.tensors[ti]));
        li.appendChild(a);
        const other = ti >= 0 ? T.tensors[ti].m : null;
        li.appendChild(document.createTextNode(
          '  ' + fmt(score) + ' (' + (score - m.sc >= 0 ? '+' : '') + (score - m.sc).toFixed(3) + ')' +
          (other && other !== m ? ' · taken by ' + other.s.name : other ? '' : ' · unmatched')));
        ol.appendChild(li);
      }
      alts.appendChild(ol);
      cols.appendChild(alts);
      box.appendChild(cols);
    } else {
      const t = sel;
      const h = el('h3', 'd-source', t.name);
      box.appendChild(h);
      if (t.cv) {
        box.appendChild(el('div', 'meta', (t.side === 's' ? 'source' : 'target') + ' tensor ' + shapeText(t.shape) + ' · converted'));
        box.appendChild(el('div', 'muted', t.cv.text));
      } else {
        box.appendChild(el('div', 'meta', (t.side === 's' ? 'source' : 'target') + ' tensor ' + shapeText(t.shape) + ' · unmatched'));
        box.appendChild(el('div', 'bad', t.why ? 'Why: ' + t.why : 'Not in the mapping.'));
      }
    }
  }
  function markSelected(on) {
    if (!selected) return;
    const rows = selected.s ? [selected.s.row, selected.t.row] : [selected.row];
    for (const r of rows) if (r) r.classList.toggle('sel', on);
  }
  function select(t) {
    markSelected(false);
    selected = t.m || t;
    const targets = selected.s ? [selected.s, selected.t] : [selected];
    for (const x of targets) {
      const row = reveal(x);
      if (row && x !== t) {
        row.scrollIntoView({ block: 'center' });
        row.classList.remove('flash');
        void row.offsetWidth; // restart the animation
        row.classList.add('flash');
      }
    }
    markSelected(true);
    showDetails(selected);
    drawLines();
  }

  // ---- unmatched lists, collapsed into index patterns as the terminal prints them ----
  // D.up.s / D.up.t: [name pattern, shape, reason pattern, tensor indices] per line (see
  // report::patterns for the notation). A line for many tensors opens to list them all.
  function memberRow(t) {
    const row = el('div', 'up-member', t.name);
    row.dataset.name = t.name;
    row.addEventListener('click', () => select(t));
    return row;
  }
  function patternLine(side, [name, shape, why, members]) {
    const line = el('div', 'up-row');
    line.appendChild(el('span', 'up-n', members.length > 1 ? members.length + '×' : ''));
    line.appendChild(el('span', 'up-name', name));
    line.appendChild(el('span', 'sh', shape));
    line.appendChild(el('span', 'up-why', why));
    if (members.length === 1) {
      const t = side.tensors[members[0]];
      line.dataset.name = t.name;
      line.classList.add('up-one');
      line.addEventListener('click', () => select(t));
      return line;
    }
    const box = el('details', 'up');
    const summary = el('summary');
    summary.appendChild(line);
    box.appendChild(summary);
    // The member rows are made when the line is first opened.
    box.wmFill = () => {
      if (box.wmFilled) return;
      box.wmFilled = true;
      const list = el('div', 'up-members');
      for (const i of members) list.appendChild(memberRow(side.tensors[i]));
      box.appendChild(list);
    };
    box.addEventListener('toggle', () => box.open && box.wmFill());
    return box;
  }
  function renderUnmatched() {
    const box = $('unmatched');
    box.textContent = '';
    const up = D.up || { s: [], t: [] };
    let collapsed = false;
    for (const [side, lines, title] of [[S, up.s, 'Unmatched source'], [T, up.t, 'Unmatched target']]) {
      if (!lines.length) continue;
      const n = lines.reduce((k, x) => k + x[3].length, 0);
      box.appendChild(el('h4', null, title + ' (' + n + (lines.length < n ? ' tensors in ' + lines.length + (lines.length === 1 ? ' line' : ' lines') : '') + ')'));
      for (const p of lines) {
        box.appendChild(patternLine(side, p));
        if (p[3].length > 1) collapsed = true;
      }
    }
    if (collapsed) box.appendChild(el('div', 'muted', 'N× NAME: N tensors (open the line to list them); {a..b} every index a to b, {a,b} those, {=K} the K-th brace again'));
  }

  // ---- header, toolbar, events ----
  function stats() {
    const box = $('stats');
    const add = (label, value) => {
      const s = el('span', null, label + ' ');
      s.appendChild(el('b', null, value));
      box.appendChild(s);
    };
    add('source', D.source.path + ' (' + D.source.format + ', ' + D.source.tensors + ' tensors, ' + D.source.order.replace(/_/g, ' ') + ' order)');
    add('target', D.target.path + ' (' + D.target.format + ', ' + D.target.tensors + ' tensors, ' + D.target.order.replace(/_/g, ' ') + ' order)');
    add('matched', M.length + ' of ' + D.target.tensors + ' targets (' + (D.coverage * 100).toFixed(1) + '%)');
    const c = D.counts;
    add('unmatched', c.unmatched_source + ' source, ' + c.unmatched_target + ' target');
    add('marks', c.exact + ' exact, ' + c.transpose + ' transpose, ' + c.reshape + ' reshape, ' + c.ambiguous + ' ambiguous');
    add('needs review', String(c.needs_review));
    add('strategy', D.strategy + ', threshold ' + D.threshold.toFixed(2));
    add('weights', 'shape ' + D.weights.shape.toFixed(2) + ', name ' + D.weights.name.toFixed(2) + ', hierarchy ' + D.weights.hierarchy.toFixed(2));
    if (D.rel.length) add('conversions', D.rel.length + ' split/concat/stack relation(s), drawn dashed');
  }
  let status;
  function toolbar() {
    const bar = $('toolbar');
    const search = el('input');
    search.type = 'search';
    search.placeholder = 'Search tensor names…';
    search.id = 'search';
    let timer = 0;
    search.addEventListener('input', () => {
      clearTimeout(timer);
      timer = setTimeout(() => setQuery(search.value), 150);
    });
    bar.appendChild(search);
    for (const [key, label, test, counted] of FILTERS) {
      const n = counted(D.counts);
      const lab = el('label');
      const box = el('input');
      box.type = 'checkbox';
      box.id = 'filter-' + key;
      box.addEventListener('change', () => {
        if (box.checked) active.add(key);
        else active.delete(key);
        applyFilters();
      });
      lab.appendChild(box);
      lab.appendChild(document.createTextNode(label + ' (' + n + ')'));
      bar.appendChild(lab);
    }
    const button = (label, f) => {
      const b = el('button', null, label);
      b.type = 'button';
      b.addEventListener('click', f);
      bar.appendChild(b);
    };
    button('Expand all', expandAll);
    button('Collapse all', collapseAll);
    const legend = el('span', 'legend');
    for (const [cls, text] of [['good', '≥ ' + GOOD], ['fair', FAIR + '–' + GOOD], ['poor', '< ' + FAIR]]) {
      const s = el('span');
      const i = el('i');
      i.style.background = 'var(--' + cls + ')';
      s.appendChild(i);
      s.appendChild(document.createTextNode(text));
      legend.appendChild(s);
    }
    if (CV.length) {
      const s = el('span');
      const i = el('i', 'conv');
      s.appendChild(i);
      s.appendChild(document.createTextNode('split / concat / stack'));
      legend.appendChild(s);
    }
    bar.appendChild(legend);
    status = el('span', 'status');
    bar.appendChild(status);
  }
  function setQuery(q) {
    query = q.trim().toLowerCase();
    applyFilters();
  }
  function applyFilters() {
    if (filtering()) {
      if (!savedOpen) savedOpen = new Set([S, T].flatMap(allNodes).filter((n) => n.open));
      const hits = computeHits(S) + computeHits(T);
      const open = hits <= AUTO_EXPAND_LIMIT;
      for (const side of [S, T]) for (const n of allNodes(side)) if (n.parent) n.open = open ? n.hits > 0 : savedOpen.has(n);
      status.textContent = hits + ' tensor(s) shown' + (open ? '' : ' (open modules to see them)');
    } else {
      if (savedOpen) for (const side of [S, T]) for (const n of allNodes(side)) n.open = !n.parent || savedOpen.has(n);
      savedOpen = null;
      for (const side of [S, T]) for (const t of side.tensors) t.pass = true;
      status.textContent = '';
    }
    renderAll();
  }
  function onPaneClick(ev) {
    const row = ev.target.closest('.row');
    if (!row || !row.wm) return;
    if (row.wm.node) {
      setOpen(row.wm.side, row.wm.node, !row.wm.node.open);
      scheduleLines();
    } else {
      select(row.wm.t);
    }
  }

  // Opened as report.html#selftest: expand everything, click a match, and write what
  // was found as JSON into a hidden pre element (id wm-selftest) at the end of the
  // body, for a headless browser to read back.
  function selftest() {
    const out = { ok: false };
    try {
      expandAll();
      const shown = new Set(Array.from(T.pane.querySelectorAll('.row.ten'), (r) => r.dataset.name));
      const missing = D.t.map((x) => x[0]).filter((n) => !shown.has(n));
      out.target_tensors = D.t.length;
      out.target_rows = shown.size;
      out.missing = missing.slice(0, 20);
      out.missing_count = missing.length;
      // One dashed line per (source, target) of each conversion, out of view included.
      drawAll = true;
      drawLines();
      drawAll = false;
      out.conversion_members = CV.reduce((n, c) => n + c.pairs.length, 0);
      out.conversion_lines = svg.querySelectorAll('path.conv').length;
      const m = M.find((x) => x.tr !== 'exact') || M[0];
      if (m) {
        m.s.row.dispatchEvent(new MouseEvent('click', { bubbles: true }));
        const det = $('selection');
        const q = (s) => (det.querySelector(s) || {}).textContent;
        out.clicked = m.s.name;
        out.expected_target = m.t.name;
        out.details_source = q('.d-source');
        out.details_target = q('.d-target');
        out.breakdown_rows = det.querySelectorAll('.bd-row').length;
        out.details_total = q('.bd-total .v');
        out.expected_total = fmt(m.b[0]);
        out.selected_rows = document.querySelectorAll('.row.sel').length;
        out.lines = svg.querySelectorAll('path').length;
      }
      // Search and each filter: the rows shown are exactly the tensors that pass.
      const rowCount = () => S.pane.querySelectorAll('.row.ten').length + T.pane.querySelectorAll('.row.ten').length;
      const expected = (test) => S.tensors.filter(test).length + T.tensors.filter(test).length;
      const q = (m ? m.t.leaf : D.t[0][0]).toLowerCase();
      setQuery(q);
      out.search = [q, rowCount(), expected((t) => t.name.toLowerCase().includes(q))];
      setQuery('');
      out.filters = {};
      for (const [key, , test] of FILTERS) {
        active.add(key);
        applyFilters();
        out.filters[key] = [rowCount(), expected(test)];
        active.delete(key);
        applyFilters();
      }
      out.filter_labels = {};
      for (const [key] of FILTERS) out.filter_labels[key] = $('filter-' + key).parentNode.textContent;
      out.rows_after_reset = rowCount();
      // The unmatched lists: every line opened lists exactly the unmatched tensors, once.
      const ups = document.querySelectorAll('#unmatched details.up');
      for (const d of ups) {
        d.open = true;
        d.wmFill();
      }
      const listed = Array.from(document.querySelectorAll('#unmatched .up-member, #unmatched .up-one'), (r) => r.dataset.name);
      const unmatchedNames = D.us.map(([i]) => S.tensors[i].name).concat(D.ut.map(([i]) => T.tensors[i].name));
      out.unmatched_lines = document.querySelectorAll('#unmatched .up-row').length;
      out.unmatched_listed = listed.length;
      out.unmatched_expected = unmatchedNames.length;
      const want = new Set(unmatchedNames);
      const unmatchedOk = listed.length === unmatchedNames.length && new Set(listed).size === listed.length && listed.every((n) => want.has(n));
      const filtersOk = out.search[1] === out.search[2] && Object.values(out.filters).every(([a, b]) => a === b) &&
        out.rows_after_reset === S.tensors.length + T.tensors.length;
      out.ok = missing.length === 0 && filtersOk && unmatchedOk && out.conversion_lines === out.conversion_members && (!m || (out.details_source === m.s.name && out.details_target === m.t.name &&
        out.breakdown_rows === 9 && out.details_total === out.expected_total && out.selected_rows === 2 && out.lines > 0));
      if (m) select(m.s);
    } catch (e) {
      out.error = String((e && e.stack) || e);
    }
    const pre = el('pre', null, JSON.stringify(out));
    pre.id = 'wm-selftest';
    document.body.appendChild(pre);
    document.title = 'selftest ' + (out.ok ? 'ok' : 'FAILED');
  }

  S.pane = $('src-pane');
  T.pane = $('tgt-pane');
  stats();
  toolbar();
  renderUnmatched();
  S.pane.addEventListener('click', onPaneClick);
  T.pane.addEventListener('click', onPaneClick);
  S.pane.addEventListener('scroll', scheduleLines, { passive: true });
  T.pane.addEventListener('scroll', scheduleLines, { passive: true });
  window.addEventListener('resize', scheduleLines);
  // Start with the top two levels open: enough to see the model's shape.
  for (const side of [S, T]) for (const n of allNodes(side)) if (n.level === 1 && n.kids.length + n.tensors.length <= 64) n.open = true;
  renderAll();
  if (location.hash === '#selftest') selftest();
})();
