// The cluster view: polls /api/cluster and draws applications (rows) × nodes (columns), each
// cell coloured by what that node made of the application, its message on hover; a rollout in
// progress shows its phase and how many nodes run the new revision. Plain DOM, no framework.
'use strict';

const POLL_MS = 1000;
const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

const LABEL = { 'ready': '✓', 'error': '✗', 'pending': '…', 'no-agent': '?', 'not-selected': '' };

function appKey(a) { return (a.namespace ? a.namespace + '/' : '') + a.name; }

function headRow(nodes) {
  const tr = el('tr');
  tr.appendChild(el('th', 'app-col', 'application'));
  tr.appendChild(el('th', 'sum-col', 'ready'));
  for (const n of nodes) {
    const th = el('th', 'node-col' + (n.agent === 'missing' ? ' no-agent' : ''), n.name);
    th.title = n.agent === 'missing' ? n.name + ': no apiary agent runs here' : n.name;
    th.dataset.node = n.name;
    tr.appendChild(th);
  }
  tr.appendChild(el('th', 'roll-col', 'rollout'));
  return tr;
}

function rolloutCell(r) {
  const td = el('td', 'roll-col');
  if (!r) { td.textContent = '—'; return td; }
  const phase = el('span', 'phase p-' + String(r.phase || '').toLowerCase(), r.phase || '');
  td.appendChild(phase);
  if (r.total) {
    const bar = el('div', 'bar');
    const fill = el('div', 'fill');
    fill.style.width = Math.round(100 * (r.updated || 0) / r.total) + '%';
    bar.appendChild(fill);
    td.appendChild(bar);
    td.appendChild(el('span', 'meta', (r.updated || 0) + '/' + r.total + ' on ' + (r.target || 'new')));
  }
  if (r.message) td.title = r.message;
  td.dataset.testid = 'rollout';
  return td;
}

function row(a, nodes) {
  const tr = el('tr');
  tr.dataset.app = appKey(a);
  const name = el('td', 'app-col');
  name.appendChild(el('div', 'name', appKey(a)));
  name.appendChild(el('div', 'meta', a.kind));
  const c = a.condition || {};
  const badge = el('span', 'badge b-' + String(c.type || 'pending').toLowerCase(), c.type || 'Pending');
  badge.title = c.message || '';
  name.appendChild(badge);
  tr.appendChild(name);
  const sum = el('td', 'sum-col', a.ready + '/' + a.selected);
  sum.title = c.message || '';
  tr.appendChild(sum);
  for (const n of nodes) {
    const cell = (a.cells || {})[n.name] || { state: 'not-selected' };
    const td = el('td', 'cell c-' + cell.state, LABEL[cell.state] || '');
    td.dataset.node = n.name;
    td.dataset.state = cell.state;
    td.title = n.name + ': ' + (cell.message || cell.state.replace('-', ' '));
    if (cell.revision) td.title += ' (revision ' + cell.revision + ')';
    tr.appendChild(td);
  }
  tr.appendChild(rolloutCell(a.rollout));
  return tr;
}

function draw(v) {
  const grid = $('grid');
  const nodes = v.nodes || [];
  const apps = v.applications || [];
  const next = document.createDocumentFragment();
  const thead = el('thead');
  thead.appendChild(headRow(nodes));
  next.appendChild(thead);
  const tbody = el('tbody');
  for (const a of apps) tbody.appendChild(row(a, nodes));
  next.appendChild(tbody);
  grid.replaceChildren(next);
  $('empty').hidden = apps.length > 0;
}

async function poll() {
  const status = $('status');
  try {
    const r = await fetch('/api/cluster', { cache: 'no-store' });
    if (!r.ok) throw new Error(r.status + ' ' + (await r.text()));
    const v = await r.json();
    draw(v);
    status.textContent = (v.applications || []).length + ' application(s), ' + (v.nodes || []).length +
      ' node(s) · ' + new Date().toLocaleTimeString();
    status.classList.remove('bad');
  } catch (e) {
    status.textContent = 'cannot reach the operator: ' + e.message;
    status.classList.add('bad');
  }
  setTimeout(poll, POLL_MS);
}

poll();
