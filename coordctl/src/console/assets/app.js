// coord console: one page, hash routes, the JSON API of `coordctl console`.
// Every value from the server is put in the page as text (never as HTML), so a config value
// cannot inject markup.
'use strict';

const CSRF = document.querySelector('meta[name=csrf-token]').content;
const WRITABLE = document.querySelector('meta[name=writable]').content === 'true';
// Reads need a token too (off loopback, or started with --read-token-file).
const READ_TOKEN = document.querySelector('meta[name=read-token]').content === 'true';
// The token is entered once and kept for this tab only; every request sends it as a header.
const TOKEN_KEY = 'coord-console-token';
let events = null;
// The plan view reads its plan again every second while it shows one that runs.
let planTimer = null;
let page = null;
// True while the page shows a refusal for a missing or wrong token: entering one redraws it.
let needsToken = false;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'class') node.className = v;
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

function text(v) {
  if (v === null || v === undefined) return '';
  return typeof v === 'string' ? v : JSON.stringify(v);
}

function isStringType(typeName) {
  return /(^|[<:])(String|str)>*$/.test(typeName.replace(/\s/g, ''));
}

// What the person typed, as the JSON a key of type `typeName` takes: a string takes the text
// as is; anything else is JSON, and text that is not JSON goes as a string for the server to
// refuse with the expected type.
function parseInput(typeName, raw) {
  if (isStringType(typeName)) return raw;
  try { return JSON.parse(raw); } catch (_) { return raw; }
}

// The text an input starts with: empty for a secret or an absent key.
function shownText(typeName, secret, present, value) {
  if (secret || !present) return '';
  return isStringType(typeName) && typeof value === 'string' ? value : JSON.stringify(value);
}

// An input for one stored key. Its key, type, secrecy and first text ride on the element, so
// editedChange() reads a plain field and a map's entry the same way.
function valueInput(key, typeName, secret, present, value, placeholder) {
  const input = el('input', {
    type: secret ? 'password' : 'text',
    'data-key': key,
    'data-type': typeName,
    'data-secret': secret ? 'true' : null,
    placeholder,
    autocomplete: 'off',
  });
  input.value = shownText(typeName, secret, present, value);
  input.dataset.original = input.value;
  return input;
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

async function api(path) {
  const headers = { Accept: 'application/json' };
  if (token()) headers['X-Coord-Token'] = token();
  const response = await fetch(path, { headers });
  let body = {};
  try { body = await response.json(); } catch (_) { body = { error: response.statusText }; }
  if (!response.ok) {
    const error = new Error(body.error || response.statusText);
    error.status = response.status;
    throw error;
  }
  return body;
}

async function post(path, body) {
  const response = await fetch(path, {
    method: 'POST',
    headers: {
      'Content-Type': 'application/json',
      'X-CSRF-Token': CSRF,
      'X-Coord-Token': token(),
    },
    body: JSON.stringify(body),
  });
  let data = {};
  try { data = await response.json(); } catch (_) { data = { error: response.statusText }; }
  return { ok: response.ok, status: response.status, body: data };
}

function confirmAction(question) {
  const box = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = question;
  box.hidden = false;
  return new Promise((resolve) => {
    const done = (answer) => () => {
      box.hidden = true;
      yes.removeEventListener('click', onYes);
      no.removeEventListener('click', onNo);
      resolve(answer);
    };
    const yes = document.getElementById('confirm-yes');
    const no = document.getElementById('confirm-no');
    const onYes = done(true);
    const onNo = done(false);
    yes.addEventListener('click', onYes);
    no.addEventListener('click', onNo);
  });
}

function table(headers, rows, attrs) {
  return el('table', attrs,
    el('thead', {}, el('tr', {}, headers.map((h) => el('th', {}, h)))),
    el('tbody', {}, rows));
}

function setMain(...children) {
  const main = document.getElementById('main');
  main.replaceChildren(...children);
}

function failure(e) {
  needsToken = e.status === 401 || e.status === 429;
  setMain(el('div', { class: 'notice bad' }, String(e.message || e)));
}

// ---- pages -------------------------------------------------------------------------------

async function home() {
  const prefixes = await api('/api/prefixes');
  setMain(
    el('h1', {}, 'Config prefixes'),
    el('section', {},
      prefixes.length === 0
        ? el('p', { class: 'muted' }, 'No prefix has a published schema yet (ConfigCenter::publish_schema).')
        : table(['Prefix', 'Type', 'Fields'], prefixes.map((p) => el('tr', {},
          el('td', {}, el('a', { href: '#/prefix' + p.prefix, class: 'mono' }, p.prefix)),
          el('td', {}, p.type_name),
          el('td', {}, p.fields))))));
}

function changeCell(changes) {
  return el('td', { class: 'changes' }, changes.map((c) => el('div', { class: 'change mono' },
    el('span', {}, c.key + ' '),
    c.change === 'added' ? null : el('span', { class: 'old' }, text(c.old)),
    c.change.endsWith('removed') ? el('span', { class: 'muted' }, ' removed')
      : [' → ', el('span', { class: 'new' }, text(c.new))],
    c.change.startsWith('gray') ? el('span', { class: 'tag gray' }, 'gray') : null)));
}

// A map's entries: one input per stored key (a nested map's entry has one per field), each
// with a remove box, and a row to add an entry by name.
function mapEditor(f) {
  const nested = f.kind === 'nested_map';
  const parts = nested ? f.entry_fields : [{ key: '', type_name: f.entry_type || '', secret: f.secret }];
  const typeOf = (name) => {
    if (!nested) return parts[0];
    const sub = name.slice(name.indexOf('/') + 1);
    return parts.find((p) => p.key === sub) || { key: sub, type_name: '', secret: false };
  };
  const rows = Object.entries(f.value || {}).map(([name, value]) => {
    const key = f.key + '/' + name;
    const part = typeOf(name);
    const secret = f.secret || part.secret;
    return el('tr', { 'data-entry': key },
      el('td', { class: 'mono' }, name),
      el('td', {}, valueInput(key, part.type_name, secret, true, value, secret ? '<redacted> (unchanged)' : ''),
        el('div', { class: 'field-error', 'data-key': key })),
      el('td', {}, el('label', { class: 'muted' }, el('input', { type: 'checkbox', 'data-remove': key }), ' remove')));
  });
  const adds = parts.map((p) => el('input', {
    type: f.secret || p.secret ? 'password' : 'text',
    'data-sub': p.key,
    'data-type': p.type_name,
    placeholder: (p.key ? p.key + ': ' : 'value: ') + p.type_name,
    autocomplete: 'off',
  }));
  rows.push(el('tr', { class: 'new-entry', 'data-map': f.key, 'data-nested': nested ? 'true' : null },
    el('td', {}, el('input', { type: 'text', class: 'entry-name', placeholder: 'new entry name', autocomplete: 'off' })),
    el('td', {}, adds, el('div', { class: 'field-error' })),
    el('td', {})));
  return el('table', { class: 'entries', 'data-map': f.key }, el('tbody', {}, rows));
}

function fieldsTable(fields) {
  const rows = fields.map((f) => {
    let valueCell;
    if (WRITABLE && f.kind === 'value') {
      const placeholder = f.secret ? (f.present ? '<redacted> (unchanged)' : '(not set)') : (f.present ? '' : 'default: ' + text(f.default));
      // A stored key of a field with a default can be removed: the field falls back to it.
      const reset = f.present && !f.required
        ? el('label', { class: 'muted' }, el('input', { type: 'checkbox', 'data-remove': f.key }), ' use the default')
        : null;
      valueCell = el('td', { class: 'value' }, valueInput(f.key, f.type_name, f.secret, f.present, f.value, placeholder),
        reset, el('div', { class: 'field-error', 'data-key': f.key }));
    } else if (WRITABLE) {
      valueCell = el('td', { class: 'value' }, mapEditor(f), el('div', { class: 'field-error', 'data-key': f.key }));
    } else {
      valueCell = el('td', { class: 'value', 'data-key': f.key }, f.present ? text(f.value) : el('span', { class: 'muted' }, '(default)'));
    }
    return el('tr', { 'data-key': f.key },
      el('td', { class: 'mono' }, f.key, f.secret ? el('span', { class: 'tag' }, 'secret') : null),
      valueCell,
      el('td', { class: 'mono' }, f.type_name),
      el('td', { class: 'mono' }, f.default === null || f.default === undefined ? (f.required ? 'required' : '') : text(f.default)),
      el('td', {}, el('span', { class: 'tag' }, f.source)),
      el('td', { class: 'doc' }, f.doc));
  });
  return table(['Key', 'Value', 'Type', 'Default', 'Source', 'Doc'], rows, { id: 'fields' });
}

// What an instance last said of its health on the prefix (rollout plans stop on `degraded`).
function healthTag(health) {
  if (!health) return '-';
  if (health.state === 'degraded') return el('span', { class: 'tag err' }, 'degraded: ' + health.reason);
  return el('span', { class: 'tag' }, health.state);
}

function renderRollout(statuses) {
  const body = document.querySelector('#rollout tbody');
  if (!body) return;
  body.replaceChildren(...(statuses.length === 0
    ? [el('tr', {}, el('td', { colspan: 7, class: 'muted' }, 'No live instance holds this prefix.'))]
    : statuses.map((s) => el('tr', { 'data-instance': s.instance },
      el('td', { class: 'mono' }, s.instance),
      el('td', {}, Object.entries(s.labels).map(([k, v]) => el('span', { class: 'tag' }, k + '=' + v))),
      el('td', {}, s.release === null || s.release === undefined ? '-' : String(s.release)),
      el('td', {}, s.gray ? el('span', { class: 'tag gray' }, 'gray ' + s.gray) : '-'),
      el('td', { class: 'mono' }, String(s.revision)),
      el('td', { class: 'health' }, healthTag(s.health)),
      el('td', {}, s.error ? el('span', { class: 'tag err' }, (s.error.key ? s.error.key + ': ' : '') + s.error.message) : '-')))));
}

// The gray releases still in progress: started and neither promoted nor aborted since.
function openGrays(history) {
  const closed = new Set();
  const open = new Set();
  for (const r of history) {
    const m = /^(promote|abort) (\d+)$/.exec(r.kind);
    if (m) closed.add(Number(m[2]));
    else if (r.kind.startsWith('gray') && !closed.has(r.seq)) open.add(r.seq);
  }
  return open;
}

function renderHistory(history) {
  const body = document.querySelector('#history tbody');
  if (!body) return;
  const grays = openGrays(history);
  const latest = history.length ? history[0].seq : 0;
  body.replaceChildren(...history.map((r) => {
    const actions = [];
    if (WRITABLE && r.seq !== latest && !r.kind.startsWith('gray')) {
      actions.push(el('button', { class: 'rollback', 'data-seq': r.seq, onclick: () => rollback(r.seq) }, 'Roll back to this'));
    }
    if (WRITABLE && grays.has(r.seq)) {
      actions.push(el('button', { class: 'promote', onclick: () => grayEnd('promote', r.seq) }, 'Promote'));
      actions.push(el('button', { class: 'abort', onclick: () => grayEnd('abort', r.seq) }, 'Abort'));
    }
    return el('tr', { class: 'release', 'data-seq': r.seq },
      el('td', {}, String(r.seq)),
      el('td', {}, r.kind),
      el('td', { class: 'author' }, r.author || '-'),
      el('td', { class: 'message' }, r.message || ''),
      el('td', { class: 'muted' }, r.time),
      changeCell(r.changes || []),
      el('td', {}, actions));
  }));
  const stale = document.getElementById('stale');
  if (stale && page && latest !== page.latest_seq) {
    stale.replaceChildren(
      'Release ' + latest + ' was made after this page loaded the values. ',
      el('button', { onclick: () => route() }, 'Reload'));
  }
}

async function loadHistory() {
  renderHistory(await api('/api/history?prefix=' + encodeURIComponent(page.prefix)));
}

async function prefixPage(prefix) {
  const config = await api('/api/config?prefix=' + encodeURIComponent(prefix));
  page = { prefix: config.prefix, latest_seq: config.latest_seq, fields: config.fields };
  const parts = [
    el('h1', {}, config.prefix, ' ', el('small', {}, config.type_name + ' · release ' + config.latest_seq, ' · ',
      el('a', { href: '#/plan' + config.prefix, class: 'plan-link' }, 'rollout plan'))),
    el('div', { id: 'stale', class: 'notice warn' }),
    el('section', {}, el('h2', {}, 'Values'), fieldsTable(config.fields),
      WRITABLE ? el('div', { class: 'actions' },
        el('input', { id: 'message', type: 'text', placeholder: 'Why (shown in history)' }),
        el('button', { id: 'release', class: 'primary', onclick: release }, 'Release'),
        el('input', { id: 'gray-selector', type: 'text', placeholder: 'Gray to: zone=eu-1 10% api-1' }),
        el('button', { id: 'gray-start', onclick: grayStart }, 'Gray release')) : null,
      el('div', { id: 'write-status', class: 'notice' }),
      el('div', { id: 'conflict' })),
    el('section', {}, el('h2', {}, 'Rollout ', el('small', { class: 'muted' }, '(live)')),
      table(['Instance', 'Labels', 'Release', 'Gray', 'Revision', 'Health', 'Last error'], [], { id: 'rollout' })),
    el('section', {}, el('h2', {}, 'History'),
      table(['Seq', 'Kind', 'Author', 'Message', 'Time', 'Changes', ''], [], { id: 'history' })),
  ];
  setMain(...parts);
  await loadHistory();
  await openEvents(config.prefix);
}

// The live rollout. An EventSource cannot send the token header, so when reads need a token
// the token first buys a cookie that only the event stream accepts (HttpOnly: this script
// never sees it). A stream the server ends (idle, restart) the browser reopens by itself; one
// it refuses (too many streams, a stale cookie) is tried again here after a pause.
async function openEvents(prefix) {
  if (READ_TOKEN) {
    const login = await fetch('/api/login', { method: 'POST', headers: { 'X-Coord-Token': token() } });
    if (!login.ok) return;
  }
  if (!page || page.prefix !== prefix || events) return;
  const source = new EventSource('/api/rollout/events?prefix=' + encodeURIComponent(prefix));
  events = source;
  source.addEventListener('rollout', (e) => renderRollout(JSON.parse(e.data)));
  source.addEventListener('config', () => loadHistory().catch(() => {}));
  source.addEventListener('error', () => {
    if (source.readyState !== EventSource.CLOSED) return;
    setTimeout(() => {
      if (events !== source) return;
      events = null;
      openEvents(prefix);
    }, 5000);
  });
}

function status(kind, message) {
  const box = document.getElementById('write-status');
  box.className = 'notice ' + kind;
  box.textContent = message;
}

function clearErrors() {
  for (const e of document.querySelectorAll('.field-error')) e.textContent = '';
  for (const i of document.querySelectorAll('input.refused')) i.classList.remove('refused');
  document.getElementById('conflict').replaceChildren();
  status('', '');
}

// The change the person made, as the API takes it: changed inputs, new map entries (each
// input remembers the key it went out as, so a refusal finds it) and removed entries.
// Throws a message for an entry without a usable name.
function editedChange() {
  const values = {};
  for (const input of document.querySelectorAll('#fields input[data-key]')) {
    if (input.value === input.dataset.original) continue;
    if (input.dataset.secret && input.value === '') continue;
    values[input.dataset.key] = parseInput(input.dataset.type, input.value);
  }
  for (const row of document.querySelectorAll('#fields tr.new-entry')) {
    const name = row.querySelector('input.entry-name').value.trim();
    const filled = [...row.querySelectorAll('input[data-sub]')].filter((i) => i.value !== '');
    if (filled.length === 0) continue;
    if (name === '' || name.includes('/')) {
      throw new Error('A new entry of ' + row.dataset.map + ' needs a name without "/".');
    }
    for (const input of filled) {
      const key = row.dataset.map + '/' + name + (input.dataset.sub ? '/' + input.dataset.sub : '');
      input.dataset.pending = key;
      values[key] = parseInput(input.dataset.type, input.value);
    }
  }
  const remove = [...document.querySelectorAll('#fields input[data-remove]:checked')].map((i) => i.dataset.remove);
  return { values, remove };
}

// What a refused or conflicting write shows, beside the inputs or above the history.
function showRefusal(result, what) {
  const body = result.body;
  if (result.status === 422 && body.fields) {
    for (const f of body.fields) {
      const key = CSS.escape(f.key);
      const input = document.querySelector('#fields input[data-key="' + key + '"], #fields input[data-pending="' + key + '"]');
      // Beside the input; a key with no input of its own (a new entry's) shows in its row.
      const box = document.querySelector('.field-error[data-key="' + key + '"]')
        || (input && input.closest('td').querySelector('.field-error'));
      if (input) input.classList.add('refused');
      // The schema's reason names the expected type and the doc; an unknown key has neither.
      if (box) box.textContent = f.type_name ? f.reason : 'Not a field of ' + page.prefix + ': ' + f.reason;
    }
    status('bad', 'Refused by the schema: nothing was written.');
  } else if (result.status === 409 && body.code === 'conflict') {
    status('bad', body.error);
    document.getElementById('conflict').replaceChildren(el('div', { class: 'notice warn' },
      el('p', {}, 'Changes in release ' + body.latest + ' since release ' + body.expected + ':'),
      table(['Changes'], [el('tr', {}, changeCell(body.diff))]),
      el('div', { class: 'actions' }, el('button', { id: 'reload', onclick: () => route() }, 'Reload the current values'))));
  } else {
    status('bad', what + ' failed: ' + (body.error || result.status));
  }
}

async function release() {
  clearErrors();
  let change;
  try { change = editedChange(); } catch (e) { status('bad', e.message); return; }
  const { values, remove } = change;
  if (Object.keys(values).length === 0 && remove.length === 0) { status('warn', 'Nothing changed.'); return; }
  const message = document.getElementById('message').value;
  const result = await post('/api/release', { prefix: page.prefix, values, remove, message, expect_latest: page.latest_seq });
  if (!result.ok) { showRefusal(result, 'Release'); return; }
  await route();
  status('ok', 'Released ' + result.body.seq + '.');
}

function parseSelector(raw) {
  const selector = { labels: {}, instances: [] };
  for (const part of raw.split(/[\s,]+/).filter(Boolean)) {
    const pct = /^(\d+)%$/.exec(part);
    if (pct) selector.percent = Number(pct[1]);
    else if (part.includes('=')) { const [k, ...v] = part.split('='); selector.labels[k] = v.join('='); }
    else selector.instances.push(part);
  }
  return selector;
}

async function grayStart() {
  clearErrors();
  let change;
  try { change = editedChange(); } catch (e) { status('bad', e.message); return; }
  const { values, remove } = change;
  if (remove.length > 0) { status('bad', 'A gray release sets values; remove entries with a release.'); return; }
  if (Object.keys(values).length === 0) { status('warn', 'Nothing changed.'); return; }
  const raw = document.getElementById('gray-selector').value;
  if (!raw.trim()) { status('warn', 'Say which instances: labels (zone=eu-1), a percent (10%) or instance names.'); return; }
  if (!await confirmAction('Start a gray release of ' + Object.keys(values).join(', ') + ' on ' + page.prefix + ' to ' + raw + '?')) return;
  const message = document.getElementById('message').value;
  const result = await post('/api/gray/start', { prefix: page.prefix, values, selector: parseSelector(raw), message });
  if (!result.ok) { showRefusal(result, 'Gray release'); return; }
  await route();
  status('ok', 'Gray release ' + result.body.seq + ' started.');
}

async function grayEnd(action, seq) {
  const question = action === 'promote'
    ? 'Promote gray release ' + seq + ' to every instance of ' + page.prefix + '?'
    : 'Abort gray release ' + seq + ' (its instances go back to the prefix values)?';
  if (!await confirmAction(question)) return;
  const message = document.getElementById('message')?.value || action + ' gray release ' + seq + ' from the console';
  const result = await post('/api/gray/' + action, { prefix: page.prefix, seq, message });
  if (!result.ok) { showRefusal(result, action); return; }
  await route();
  status('ok', (action === 'promote' ? 'Promoted ' : 'Aborted ') + seq + '.');
}

async function rollback(seq) {
  clearErrors();
  if (!await confirmAction('Roll ' + page.prefix + ' back to the values of release ' + seq + '? Every instance gets them.')) return;
  const message = document.getElementById('message')?.value || 'rollback to ' + seq + ' from the console';
  const result = await post('/api/rollback', { prefix: page.prefix, seq, message, expect_latest: page.latest_seq });
  if (!result.ok) { showRefusal(result, 'Rollback'); return; }
  await route();
  status('ok', 'Rolled back to ' + seq + ' (release ' + result.body.seq + ').');
}

async function locksPage() {
  const locks = await api('/api/locks');
  setMain(el('h1', {}, 'Locks'), el('section', {}, table(['Lock', 'Holder', 'Fencing token', 'TTL left', 'Waiters'],
    locks.map((l) => el('tr', {},
      el('td', { class: 'mono' }, l.name), el('td', { class: 'mono' }, l.holder),
      el('td', {}, String(l.fencing_token)), el('td', {}, l.ttl_left_secs === null ? '-' : l.ttl_left_secs + 's'),
      el('td', { class: 'mono' }, l.waiters.map((w) => w.key).join(' ') || '-'))))));
}

async function countsPage(title, api_path, link, rest) {
  if (rest) return rest();
  const counts = await api(api_path);
  setMain(el('h1', {}, title), el('section', {}, table(['Name', 'Count'],
    counts.map((c) => el('tr', {}, el('td', {}, el('a', { href: link + c.name }, c.name)), el('td', {}, String(c.count)))))));
}

async function idsPage(service) {
  await countsPage('Instance IDs', '/api/ids', '#/ids/', service && (async () => {
    const ids = await api('/api/ids?service=' + encodeURIComponent(service));
    setMain(el('h1', {}, 'Instance IDs of ' + service), el('section', {}, table(['ID', 'Key', 'TTL left'],
      ids.map((i) => el('tr', {}, el('td', {}, String(i.id)), el('td', { class: 'mono' }, i.key),
        el('td', {}, i.ttl_left_secs === null ? '-' : i.ttl_left_secs + 's'))))));
  }));
}

async function servicesPage(name) {
  await countsPage('Services', '/api/services', '#/services/', name && (async () => {
    const instances = await api('/api/services?name=' + encodeURIComponent(name));
    setMain(el('h1', {}, 'Service ' + name), el('section', {}, table(['ID', 'Address', 'Version', 'Started', 'Metadata'],
      instances.map((i) => el('tr', {}, el('td', { class: 'mono' }, i.id), el('td', { class: 'mono' }, i.address),
        el('td', {}, i.version || '-'), el('td', {}, i.started_at || '-'),
        el('td', {}, Object.entries(i.metadata || {}).map(([k, v]) => el('span', { class: 'tag' }, k + '=' + v))))))));
  }));
}

// ---- review: proposals waiting for another principal's approval ----------------------------

function proposalState(p) {
  if (p.state === 'approved') return 'approved by ' + p.decided_by + ' (release ' + p.release + ')';
  if (p.state === 'rejected') return 'rejected by ' + p.decided_by + ': ' + p.reason;
  return p.state;
}

function proposalChanges(p) {
  const gray = Object.entries(p.gray_values || {}).map(([key, v]) => ({ key, change: 'gray', old: null, new: v }));
  return changeCell(p.changes.concat(gray));
}

// One prefix's proposals, open first; Approve and Reject only for a principal who may (the
// server refuses the others all the same).
function proposalsSection(answer) {
  const open = answer.proposals.filter((p) => p.state === 'open');
  const decided = answer.proposals.filter((p) => p.state !== 'open').reverse();
  const who = answer.principal
    ? (answer.can_approve ? 'You (' + answer.principal + ') may approve here.' : answer.principal + ' may not approve here: ' + answer.reason)
    : answer.reason;
  const rows = open.concat(decided).map((p) => {
    const actions = [];
    if (p.state === 'open' && answer.can_approve) {
      const reason = el('input', { type: 'text', class: 'reject-reason', placeholder: 'Why reject' });
      actions.push(
        el('button', { class: 'approve primary', onclick: () => decide(answer.prefix, p, 'approve') }, 'Approve'),
        reason,
        el('button', { class: 'reject', onclick: () => decide(answer.prefix, p, 'reject', reason.value) }, 'Reject'));
    }
    return el('tr', { class: 'proposal', 'data-id': p.id },
      el('td', { class: 'mono' }, p.id),
      el('td', {}, el('span', { class: 'tag' }, proposalState(p))),
      el('td', {}, p.proposer + (p.via ? ' (via ' + p.via + ')' : '')),
      el('td', { class: 'message' }, p.message || ''),
      el('td', { class: 'muted' }, p.created, el('br'), 'expires ' + p.expires),
      proposalChanges(p),
      el('td', {}, actions));
  });
  return el('section', { 'data-prefix': answer.prefix },
    el('h2', {}, el('a', { href: '#/prefix' + answer.prefix, class: 'mono' }, answer.prefix), ' ',
      el('small', { class: 'muted' }, open.length + ' open')),
    el('p', { class: 'muted who' }, who),
    rows.length === 0 ? el('p', { class: 'muted' }, 'No proposal.')
      : table(['Id', 'State', 'Proposer', 'Message', 'Created', 'Changes', ''], rows));
}

async function reviewPage() {
  const prefixes = await api('/api/prefixes');
  const answers = [];
  for (const p of prefixes) {
    answers.push(await api('/api/proposals?prefix=' + encodeURIComponent(p.prefix)));
  }
  const waiting = answers.filter((a) => a.proposals.length > 0);
  setMain(
    el('h1', {}, 'Review ', el('small', {}, 'proposals waiting for another principal')),
    el('div', { id: 'write-status', class: 'notice' }),
    waiting.length === 0
      ? el('section', {}, el('p', { class: 'muted' }, 'No proposal on any prefix (coordctl config propose PREFIX KEY=VALUE…).'))
      : el('div', {}, waiting.map(proposalsSection)));
}

async function decide(prefix, proposal, action, reason) {
  if (action === 'reject' && !(reason || '').trim()) { status('warn', 'Say why you reject it: the proposer reads it.'); return; }
  const question = action === 'approve'
    ? 'Approve proposal ' + proposal.id + ' of ' + prefix + ' by ' + proposal.proposer + '? It is released at once.'
    : 'Reject proposal ' + proposal.id + ' of ' + prefix + '?';
  if (!await confirmAction(question)) return;
  // An approval names the revision shown, so nothing rewritten since is approved.
  const body = action === 'approve'
    ? { prefix, id: proposal.id, revision: proposal.revision }
    : { prefix, id: proposal.id, reason };
  const result = await post('/api/proposals/' + action, body);
  if (!result.ok) { status('bad', (action === 'approve' ? 'Approval' : 'Rejection') + ' failed: ' + (result.body.error || result.status)); return; }
  await route();
  status('ok', action === 'approve' ? 'Approved: release ' + result.body.seq + '.' : 'Rejected ' + proposal.id + '.');
}

// ---- plan: a rollout plan's steps, the instances on each, its log ---------------------------

const PLAN_ENDED = ['promoted', 'aborted', 'cancelled'];

function instanceTag(i) {
  let kind = 'tag ok';
  let note = '';
  if (i.error) { kind = 'tag err'; note = ' (rejected: ' + i.error + ')'; }
  else if (i.health && i.health.state === 'degraded') { kind = 'tag err'; note = ' (degraded: ' + i.health.reason + ')'; }
  else if (!i.runs_it) { kind = 'tag'; note = ' (loading)'; }
  return el('span', { class: kind, 'data-instance': i.instance }, i.instance + note);
}

function gatesText(gates) {
  return (gates.healthy ? 'no selected instance degraded, ' : '')
    + 'every selected instance on each step within ' + gates.rollout_timeout + ', none rejects it';
}

// The plan as it stands; Pause/Resume and Cancel only for a principal who may release on the
// prefix (the server refuses the others all the same).
function renderPlan(plan) {
  const box = document.getElementById('plan');
  if (!box) return;
  const ended = PLAN_ENDED.includes(plan.state);
  if (ended && planTimer) { clearInterval(planTimer); planTimer = null; }
  const actions = [];
  if (WRITABLE && !ended) {
    if (plan.can_steer) {
      actions.push(plan.paused
        ? el('button', { id: 'plan-resume', class: 'primary', onclick: () => steerPlan(plan, 'resume') }, 'Resume')
        : el('button', { id: 'plan-pause', onclick: () => steerPlan(plan, 'pause') }, 'Pause'));
      actions.push(el('button', { id: 'plan-cancel', class: 'danger', onclick: () => steerPlan(plan, 'cancel') }, 'Cancel the plan'));
    } else {
      actions.push(el('p', { class: 'muted who' },
        plan.principal ? plan.principal + ' may not steer this plan: ' + plan.reason : plan.reason));
    }
  }
  const steps = plan.steps.map((s) => el('tr', { class: 'step', 'data-step': s.step, 'data-state': s.state },
    el('td', {}, String(s.step)),
    el('td', { class: 'mono' }, s.describe),
    el('td', {}, s.bake),
    el('td', {}, el('span', { class: s.state === 'current' || s.state === 'paused' ? 'tag gray' : 'tag' }, s.state)),
    el('td', {}, s.instances === undefined ? '-' : s.on_it + ' of ' + s.selected),
    el('td', { class: 'instances' }, s.instances === undefined ? '-' : s.instances.map(instanceTag))));
  const values = Object.entries(plan.plan.values).map(([k, v]) => el('span', { class: 'tag mono' }, k + ' = ' + text(v)));
  box.replaceChildren(
    el('section', {},
      el('p', { class: 'plan-state' }, el('strong', {}, plan.state_text)),
      ended ? null : el('p', { class: 'plan-now mono' }, plan.now),
      el('p', { class: 'muted' }, 'Started by ' + plan.started_by + (plan.plan.message ? ' · ' + plan.plan.message : '')),
      el('p', {}, 'Values: ', values, (plan.plan.removes || []).map((k) => el('span', { class: 'tag mono' }, k + ' removed'))),
      el('p', { class: 'muted' }, 'Gates: ' + gatesText(plan.plan.gates)),
      actions.length ? el('div', { class: 'actions' }, actions) : null),
    el('section', {}, el('h2', {}, 'Steps'),
      table(['Step', 'Selector', 'Bake', 'State', 'On it', 'Instances'], steps, { id: 'plan-steps' })),
    el('section', {}, el('h2', {}, 'Log ', el('small', { class: 'muted' }, '(newest first)')),
      table(['Time', 'What happened'], plan.log.slice().reverse().map((l) => el('tr', { class: 'log' },
        el('td', { class: 'muted' }, new Date(l.at_ms).toISOString()),
        el('td', {}, l.text))), { id: 'plan-log' })));
}

async function planPage(prefix) {
  const path = '/api/plan?prefix=' + encodeURIComponent(prefix);
  let plan;
  try {
    plan = await api(path);
  } catch (e) {
    if (e.status !== 404) throw e;
    setMain(el('h1', {}, 'Rollout plan of ', el('a', { href: '#/prefix' + prefix, class: 'mono' }, prefix)),
      el('section', {}, el('p', { class: 'muted' }, e.message + ' (coordctl config plan start FILE starts one).')));
    return;
  }
  setMain(
    el('h1', {}, 'Rollout plan ', el('span', { class: 'mono' }, plan.id), ' of ',
      el('a', { href: '#/prefix' + plan.plan.prefix, class: 'mono' }, plan.plan.prefix),
      ' ', el('small', { class: 'muted' }, '(live)')),
    el('div', { id: 'write-status', class: 'notice' }),
    el('div', { id: 'plan' }));
  renderPlan(plan);
  if (PLAN_ENDED.includes(plan.state)) return;
  const hash = location.hash;
  planTimer = setInterval(async () => {
    if (location.hash !== hash) return;
    try {
      renderPlan(await api(path));
    } catch (e) {
      status('bad', 'Could not read the plan: ' + e.message);
    }
  }, 1000);
}

async function steerPlan(plan, action) {
  const question = {
    pause: 'Pause plan ' + plan.id + ' of ' + plan.plan.prefix + '? Its driver holds it at its step until it is resumed.',
    resume: 'Resume plan ' + plan.id + ' of ' + plan.plan.prefix + '? Its step bakes again from the start.',
    cancel: 'Cancel plan ' + plan.id + ' of ' + plan.plan.prefix + '? Its gray release is aborted: every instance goes back to the base values.',
  }[action];
  if (!await confirmAction(question)) return;
  const result = await post('/api/plan/' + action, { prefix: plan.plan.prefix });
  if (!result.ok) { status('bad', 'Could not ' + action + ' the plan: ' + (result.body.error || result.status)); return; }
  renderPlan(Object.assign(result.body, { can_steer: plan.can_steer, principal: plan.principal, reason: plan.reason }));
  status('ok', { pause: 'Paused.', resume: 'Resumed.', cancel: 'Cancelled: every instance is back on the base values.' }[action]);
}

// ---- audit: who did what, and what was refused ---------------------------------------------

async function auditPage() {
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  const prefix = params.get('prefix') || '';
  const since = params.get('since') || '24h';
  const records = await api('/api/audit?prefix=' + encodeURIComponent(prefix) + '&since=' + encodeURIComponent(since));
  const prefixInput = el('input', { type: 'text', id: 'audit-prefix', placeholder: 'Prefix (all)' });
  prefixInput.value = prefix;
  const sinceInput = el('input', { type: 'text', id: 'audit-since', placeholder: 'Since (24h, 7d)' });
  sinceInput.value = since;
  const show = () => {
    location.hash = '#/audit?' + new URLSearchParams({ prefix: prefixInput.value.trim(), since: sinceInput.value.trim() });
  };
  setMain(
    el('h1', {}, 'Audit log'),
    el('div', { class: 'actions' }, prefixInput, sinceInput, el('button', { onclick: show }, 'Show')),
    el('section', {}, records.length === 0 ? el('p', { class: 'muted' }, 'No record.')
      : table(['Time', 'Principal', 'Action', 'Target', 'Detail', 'Outcome', 'Reason'],
        records.slice().reverse().map((r) => el('tr', { class: 'record' },
          el('td', { class: 'muted' }, r.time),
          el('td', {}, r.principal + (r.via ? ' (via ' + r.via + ')' : '')),
          el('td', {}, r.action),
          el('td', { class: 'mono' }, r.target),
          el('td', {}, r.detail || '-'),
          el('td', {}, el('span', { class: r.outcome === 'refused' ? 'tag err' : 'tag' }, r.outcome)),
          el('td', { class: 'doc' }, r.reason || ''))))));
}

async function route() {
  if (events) { events.close(); events = null; }
  if (planTimer) { clearInterval(planTimer); planTimer = null; }
  page = null;
  needsToken = false;
  const hash = decodeURIComponent(location.hash.slice(1) || '/');
  try {
    if (hash.startsWith('/prefix/')) await prefixPage(hash.slice('/prefix'.length));
    else if (hash.startsWith('/plan/')) await planPage(hash.slice('/plan'.length));
    else if (hash === '/locks') await locksPage();
    else if (hash === '/review') await reviewPage();
    else if (hash === '/audit' || hash.startsWith('/audit?')) await auditPage();
    else if (hash.startsWith('/ids')) await idsPage(hash.slice('/ids/'.length));
    else if (hash.startsWith('/services')) await servicesPage(hash.slice('/services/'.length));
    else await home();
  } catch (e) {
    failure(e);
  }
}

function setup() {
  const mode = document.getElementById('mode');
  mode.textContent = (WRITABLE ? 'writable with a token' : 'read-only') + (READ_TOKEN ? ', reads need a token' : '');
  if (WRITABLE) mode.classList.add('writable');
  if (WRITABLE || READ_TOKEN) {
    const box = document.getElementById('token-box');
    box.hidden = false;
    const input = document.getElementById('token');
    input.value = token();
    input.addEventListener('input', () => sessionStorage.setItem(TOKEN_KEY, input.value));
    // A page refused for want of a token is drawn again once one is entered; a page already
    // shown (perhaps with edits in it) is left alone.
    input.addEventListener('change', () => { if (needsToken) route(); });
  }
  window.addEventListener('hashchange', route);
  route();
}

setup();
