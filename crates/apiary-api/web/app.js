// The host view: polls /api/host and redraws the picture in place (elements are kept by key,
// so a box that stays is the same element with new numbers). Plain DOM, no framework.
'use strict';

const POLL_MS = 1000;
const $ = (id) => document.getElementById(id);
let selected = null;      // program id shown in the details panel
let selectedMap = null;   // kernel map id shown under it
let kernelOpen = false;   // whether the details' kernel section is unfolded

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

// Make `parent`'s keyed children match `items` in order: reuse, create, move, remove.
function reconcile(parent, items, keyOf, create, update) {
  const old = new Map();
  for (const c of Array.from(parent.children)) {
    if (c.dataset.key !== undefined) old.set(c.dataset.key, c);
    else parent.removeChild(c);
  }
  items.forEach((item, i) => {
    const key = keyOf(item);
    let node = old.get(key);
    if (node) old.delete(key);
    else { node = create(item); node.dataset.key = key; }
    update(node, item);
    if (parent.children[i] !== node) parent.insertBefore(node, parent.children[i] || null);
  });
  for (const n of old.values()) parent.removeChild(n);
}

function setText(node, text) {
  const t = String(text);
  if (node.textContent !== t) node.textContent = t;
}

function netnsName(p) {
  if (!p) return null;
  const m = /^\/(?:var\/)?run\/netns\/(.+)$/.exec(p);
  return m ? m[1] : p;
}

function fmt(n) { return Number(n).toLocaleString('en-US'); }

// One program box; `solo` for a link of its own (not in a dispatcher chain).
function createBox() {
  const slot = el('div', 'slot');
  slot.appendChild(el('span', 'arrow', '→'));
  const b = el('div', 'prog');
  b.tabIndex = 0;
  b.appendChild(el('div', 'name'));
  b.appendChild(el('div', 'meta'));
  b.appendChild(el('div', 'proceed'));
  b.appendChild(el('div', 'ap'));
  const runs = el('div', 'runs');
  b.appendChild(runs);
  b.appendChild(el('div', 'verdicts'));
  b.addEventListener('click', () => select(Number(b.dataset.programId)));
  b.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') select(Number(b.dataset.programId)); });
  slot.appendChild(b);
  return slot;
}

function updateBox(slot, s, solo) {
  const b = slot.lastChild;
  b.classList.toggle('solo', !!solo);
  b.classList.toggle('selected', selected === s.program_id);
  b.dataset.programId = s.program_id;
  b.dataset.name = s.name;
  b.title = `program ${s.program_id}` + (s.link_id ? `, link ${s.link_id}` : '');
  const [name, meta, proceed, ap, runs, verdicts] = b.children;
  setText(name, s.name);
  const parts = [`#${s.program_id}`];
  if (s.priority !== null && s.priority !== undefined) parts.push(`prio ${s.priority}`);
  const pos = s.position !== null && s.position !== undefined ? `${s.position}. ` : '';
  setText(meta, pos + parts.join(' · '));
  const po = s.proceed_on && s.proceed_on.length ? `proceed-on ${s.proceed_on.join(', ')}` : '';
  setText(proceed, po);
  proceed.hidden = !po;
  setText(ap, s.attach_point || '');
  ap.hidden = !s.attach_point;
  if (s.runs === null || s.runs === undefined) {
    runs.hidden = true;
  } else {
    runs.hidden = false;
    const before = b.dataset.runs;
    b.dataset.runs = s.runs;
    if (before !== undefined && Number(before) !== s.runs) {
      b.classList.add('bumped');
      setTimeout(() => b.classList.remove('bumped'), 600);
    }
    if (!runs.firstChild) { runs.append('runs '); runs.appendChild(el('b')); }
    setText(runs.lastChild, fmt(s.runs));
  }
  const vs = Object.entries(s.verdicts || {});
  reconcile(verdicts, vs, ([k]) => k, ([k]) => {
    const v = el('span', 'verdict v-' + k.replace(/[^a-z0-9_-]/gi, ''));
    v.dataset.verdict = k;
    return v;
  }, (v, [k, n]) => { v.dataset.count = n; setText(v, `${k} ${fmt(n)}`); });
}

function drawInterfaces(host) {
  const root = $('interfaces');
  const items = host.interfaces;
  if (!items.length) {
    if (!root.querySelector('.empty')) { root.textContent = ''; root.appendChild(el('p', 'empty', 'No program on any interface.')); }
    return;
  }
  reconcile(root, items, (i) => `${i.netns || ''}|${i.iface}`, () => {
    const card = el('div', 'iface');
    const title = el('div', 'iface-title');
    title.appendChild(el('span', 'name'));
    title.appendChild(el('span', 'netns'));
    card.appendChild(title);
    card.appendChild(el('div', 'hooks'));
    return card;
  }, (card, i) => {
    card.dataset.iface = i.iface;
    card.dataset.netns = netnsName(i.netns) || '';
    const [title, hooks] = card.children;
    setText(title.firstChild, i.iface);
    setText(title.lastChild, i.netns ? `netns ${netnsName(i.netns)}` : 'host netns');
    reconcile(hooks, i.hooks, (h) => h.hook, () => {
      const row = el('div', 'hook-row');
      const label = el('div', 'hook-label');
      label.appendChild(el('span', 'hook'));
      label.appendChild(el('span', 'kind'));
      row.appendChild(label);
      row.appendChild(el('div', 'boxes'));
      return row;
    }, (row, h) => {
      row.dataset.hook = h.hook;
      const [label, boxes] = row.children;
      setText(label.firstChild, h.hook);
      setText(label.lastChild, h.chain ? `chain${h.mode ? ' · ' + h.mode : ''}` : 'links');
      reconcile(boxes, h.programs, (s) => s.link_id ? `l${s.link_id}` : `p${s.program_id}`,
        createBox, (slot, s) => updateBox(slot, s, !h.chain));
    });
  });
}

function drawGroups(host) {
  const root = $('groups');
  if (!host.groups.length) {
    if (!root.querySelector('.empty')) { root.textContent = ''; root.appendChild(el('p', 'empty', 'None.')); }
    return;
  }
  reconcile(root, host.groups, (g) => g.kind, () => {
    const card = el('div', 'group');
    card.appendChild(el('div', 'group-title'));
    card.appendChild(el('div', 'boxes'));
    return card;
  }, (card, g) => {
    card.dataset.kind = g.kind;
    setText(card.firstChild, g.kind);
    reconcile(card.lastChild, g.programs, (s) => s.link_id ? `l${s.link_id}` : `p${s.program_id}`,
      createBox, (slot, s) => updateBox(slot, s, true));
  });
}

function kvTable(rows) {
  const t = el('table', 'kv');
  for (const [k, v] of rows) {
    if (v === null || v === undefined || v === '' || (Array.isArray(v) && !v.length)) continue;
    const tr = el('tr');
    tr.appendChild(el('td', null, k));
    const td = el('td');
    if (v instanceof Node) td.appendChild(v);
    else td.textContent = typeof v === 'object' ? JSON.stringify(v) : String(v);
    tr.appendChild(td);
    t.appendChild(tr);
  }
  return t;
}

async function getJSON(url) {
  const r = await fetch(url, { cache: 'no-store' });
  const body = await r.json().catch(() => ({ error: `${r.status} ${r.statusText}` }));
  if (!r.ok) throw new Error(body.error || `${r.status}`);
  return body;
}

function select(id) {
  if (selected !== id) selectedMap = null;
  selected = id;
  $('details').hidden = false;
  for (const b of document.querySelectorAll('.prog')) {
    b.classList.toggle('selected', Number(b.dataset.programId) === id);
  }
  refreshDetails();
}

async function refreshDetails() {
  if (selected === null) return;
  const id = selected;
  const body = $('detail-body');
  let d;
  try {
    d = await getJSON(`/api/program/${id}`);
  } catch (e) {
    if (id !== selected) return;
    // Keep the map's box (it may sit inside the old details) before clearing them.
    const mapBody = $('map-body');
    mapBody.textContent = '';
    $('details').appendChild(mapBody);
    selectedMap = null;
    body.textContent = '';
    body.appendChild(el('h3', null, `program ${id}`));
    body.appendChild(el('p', 'errors', e.message));
    return;
  }
  if (id !== selected) return;
  const frag = document.createDocumentFragment();
  frag.appendChild(el('h3', null, `${d.name} (#${d.id})`));
  frag.appendChild(kvTable([
    ['type', d.type], ['kernel id', d.kernel_id], ['section', d.section], ['source', d.source],
    ['tag', d.tag], ['loaded', d.loaded_at], ['attached', (d.attach_points || []).join('\n')],
    ['metadata', Object.keys(d.metadata || {}).length ? d.metadata : null],
    ['map owner', d.map_owner_id],
  ]));
  frag.appendChild(el('h4', null, 'maps'));
  const ul = el('ul', 'maps');
  for (const m of d.maps || []) {
    const li = el('li');
    const a = el('span', 'maplink', m.name);
    a.dataset.mapId = m.kernel_id;
    a.addEventListener('click', () => { selectedMap = m.kernel_id; refreshMap(); });
    li.appendChild(a);
    li.append(` ${m.type} · key ${m.key_size} B · value ${m.value_size} B · max ${m.max_entries} · id ${m.kernel_id}`);
    ul.appendChild(li);
  }
  if (!(d.maps || []).length) ul.appendChild(el('li', 'empty', 'none'));
  frag.appendChild(ul);
  frag.appendChild(el('div', 'map-slot'));
  if (d.globals && d.globals.length) {
    frag.appendChild(el('h4', null, 'globals'));
    frag.appendChild(kvTable(d.globals.map((g) => [g.name || '?', g.value ?? g])));
  }
  if (d.kernel) {
    // A chain member runs as a copy inside the dispatcher: its own run_cnt stays 0, the box
    // shows the slot's counts.
    const k = el('details', 'kernel');
    k.open = kernelOpen;
    k.addEventListener('toggle', () => { kernelOpen = k.open; });
    k.appendChild(el('summary', null, 'kernel' + (d.stats_enabled ? '' : ' (run stats off)')));
    k.appendChild(kvTable(Object.entries(d.kernel).filter(([, v]) => typeof v !== 'object')));
    frag.appendChild(k);
  } else if (d.kernel_error) {
    frag.appendChild(el('p', 'errors', d.kernel_error));
  }
  const mapBody = $('map-body');
  frag.querySelector('.map-slot').replaceWith(mapBody);
  body.textContent = '';
  body.appendChild(frag);
  if (selectedMap !== null) refreshMap();
}

async function refreshMap() {
  const box = $('map-body');
  if (selectedMap === null) { box.textContent = ''; return; }
  const id = selectedMap;
  let m;
  try {
    m = await getJSON(`/api/map/${id}`);
  } catch (e) {
    box.textContent = '';
    box.appendChild(el('p', 'errors', `map ${id}: ${e.message}`));
    return;
  }
  if (id !== selectedMap) return;
  const frag = document.createDocumentFragment();
  frag.appendChild(el('h4', null, `map ${m.map.name || ''} (id ${id})` + (m.decoded ? '' : ' — raw bytes')));
  const t = el('table', 'entries');
  const head = el('tr');
  head.appendChild(el('th', null, 'key'));
  head.appendChild(el('th', null, 'value'));
  t.appendChild(head);
  for (const e of m.entries) {
    const tr = el('tr', 'entry');
    tr.appendChild(el('td', null, m.decoded ? JSON.stringify(e.key) : e.key_hex));
    tr.appendChild(el('td', null, m.decoded ? JSON.stringify(e.value) : e.value_hex));
    t.appendChild(tr);
  }
  frag.appendChild(t);
  if (!m.entries.length) frag.appendChild(el('p', 'empty', 'empty'));
  if (m.truncated) frag.appendChild(el('p', 'empty', 'first entries only'));
  box.textContent = '';
  box.appendChild(frag);
}

async function poll() {
  const status = $('status');
  try {
    const host = await getJSON('/api/host');
    drawInterfaces(host);
    drawGroups(host);
    const errs = $('errors');
    errs.hidden = !host.errors.length;
    errs.textContent = host.errors.join('\n');
    const n = Object.keys(host.programs).length;
    status.classList.remove('bad');
    setText(status, `${n} program${n === 1 ? '' : 's'} · run stats ${host.stats_enabled ? 'on' : 'off'} · updated ${new Date().toLocaleTimeString()}`);
    if (selected !== null) refreshDetails();
  } catch (e) {
    status.classList.add('bad');
    setText(status, `cannot reach the daemon: ${e.message}`);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

$('close').addEventListener('click', () => {
  selected = null; selectedMap = null;
  $('details').hidden = true;
  $('map-body').textContent = '';
  for (const b of document.querySelectorAll('.prog.selected')) b.classList.remove('selected');
});
poll();
