// The flow cloud-build dashboard. Every piece of data (log lines, project names, refs, errors)
// is put into the page with textContent / createTextNode, never parsed as HTML; the page's
// Content-Security-Policy allows no inline script. The live log comes from server-sent events
// (GET /ui/api/tasks/<id>/events): each event holds messages in seq order and its id is the last
// seq, so a lost connection resumes after the last message seen (no gap, no repeat).
'use strict';
(() => {
  const STEPS = ['queued', 'prepare', 'download', 'install', 'build', 'publish'];
  const FINAL = ['done', 'failed', 'cancelled', 'timed-out'];
  const ROW_H = 18;          // px per log line (app.css .log-row)
  const OVERSCAN = 30;       // rows rendered above and below the visible ones
  // a line that reads as an error ("Error: x", "npm ERR!", "fatal:", a Python traceback): "first error"
  const ERROR_RE = /(^|[^A-Za-z])(error|ERR!|fatal|Traceback)([^A-Za-z]|$)/i;
  const app = document.getElementById('app');
  let session = null;

  // -- DOM helpers: text only ---------------------------------------------------------------
  function el(tag, props, ...kids) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = String(v);
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else if (k === 'href') node.setAttribute('href', safeHref(v));
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined || kid === false) continue;
      node.appendChild(typeof kid === 'object' ? kid : document.createTextNode(String(kid)));
    }
    return node;
  }
  function safeHref(v) {
    const s = String(v);
    if (s.startsWith('/') && !s.startsWith('//')) return s;
    if (/^https?:\/\//i.test(s)) return s;
    return '#';
  }

  async function api(path, opts = {}) {
    const init = {method: opts.method || 'GET', credentials: 'same-origin', headers: {}};
    if (init.method !== 'GET') {
      init.headers['Content-Type'] = 'application/json';
      if (session) init.headers['X-CSRF-Token'] = session.csrf;
      init.body = JSON.stringify(opts.body || {});
    }
    const resp = await fetch(path, init);
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (!resp.ok || (data && data.ok === false)) {
      const err = new Error((data && data.error && data.error.message) || ('HTTP ' + resp.status));
      err.status = resp.status;
      throw err;
    }
    return data;
  }

  function pad(n) { return String(n).padStart(2, '0'); }
  function fmtTime(ms) {
    if (!ms) return '—';
    const d = new Date(ms);
    const today = new Date();
    const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    if (d.toDateString() === today.toDateString()) return hms;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms}`;
  }
  // "3 min ago", with the full date on hover (a <time> element; refreshed by tickRelative)
  function fmtRel(ms) {
    const s = Math.round((Date.now() - ms) / 1000);
    if (s < 5) return 'just now';
    if (s < 60) return `${s} s ago`;
    const m = Math.round(s / 60);
    if (m < 60) return `${m} min ago`;
    const h = Math.round(m / 60);
    if (h < 48) return `${h} h ago`;
    return `${Math.round(h / 24)} days ago`;
  }
  function fmtDate(ms) {
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function timeEl(ms) {
    if (!ms) return el('span', {class: 'muted', text: '—'});
    return el('time', {class: 'rel', datetime: new Date(ms).toISOString(), title: fmtDate(ms), 'data-ts': ms, text: fmtRel(ms)});
  }
  function tickRelative() {
    for (const t of document.querySelectorAll('time.rel[data-ts]')) t.textContent = fmtRel(Number(t.dataset.ts));
  }
  setInterval(tickRelative, 15000);
  function buildNo(t) { return t.number ? '#' + t.number : ''; }
  // prod serves this build now (the release index; a promote moves it, the channel stays)
  function prodMark(id) { return el('span', {class: 'prod-now', id: id || null, text: 'prod', title: 'prod serves this build now'}); }
  function fmtDur(ms) {
    if (ms === null || ms === undefined || ms < 0 || Number.isNaN(ms)) return '—';
    if (ms < 1000) return `${Math.round(ms)} ms`;
    const s = Math.round(ms / 1000);
    if (s < 60) return `${(ms / 1000).toFixed(s < 10 ? 1 : 0)} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${pad(s % 60)}s`;
    return `${Math.floor(m / 60)}h ${pad(m % 60)}m`;
  }
  function fmtSize(n) {
    if (typeof n !== 'number') return '';
    const units = ['B', 'KiB', 'MiB', 'GiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return i ? `${n.toFixed(1)} ${units[i]}` : `${n} B`;
  }
  function stateClass(state) {
    if (state === 'done') return 'st st-done';
    if (state === 'cancelled') return 'st st-cancelled';  // someone's choice, not a failure: neutral
    if (FINAL.includes(state)) return 'st st-bad';
    if (state === 'queued') return 'st st-queued';
    return 'st st-running';
  }
  function sourceText(src) {
    if (!src) return '';
    if (src.kind === 'git') return `${src.repo} @ ${src.ref}`;
    return 'upload';
  }

  // -- sign-in ------------------------------------------------------------------------------
  function renderLogin(message) {
    document.getElementById('who').textContent = '';
    document.getElementById('signout').hidden = true;
    const error = el('p', {id: 'login-error', class: 'error', role: 'alert', text: message || ''});
    const input = el('input', {id: 'token', name: 'token', type: 'password', autocomplete: 'current-password',
                               required: true, spellcheck: 'false', placeholder: 'your flow cloud-build token'});
    const form = el('form', {id: 'login', class: 'card login', onsubmit: async (ev) => {
      ev.preventDefault();
      error.textContent = '';
      try {
        const got = await api('/ui/api/login', {method: 'POST', body: {token: input.value}});
        input.value = '';
        session = got;
        start();
      } catch (e) {
        input.value = '';
        error.textContent = e.status === 401 ? 'That token is not valid on this server.' : e.message;
      }
    }},
    el('h1', {text: 'Sign in'}),
    el('p', {class: 'muted', text: 'Use the token you give flow publish (FLOW_CLOUDBUILD_TOKEN). '
            + 'It is sent once to sign in and never kept in the page or its address.'}),
    el('label', {for: 'token', text: 'Token'}), input,
    el('button', {type: 'submit', id: 'signin', text: 'Sign in'}), error);
    app.replaceChildren(form);
    input.focus();
  }

  async function signOut() {
    try { await api('/ui/api/logout', {method: 'POST'}); } catch (e) { /* signed out anyway */ }
    session = null;
    location.assign('/');
  }

  // -- task list ----------------------------------------------------------------------------
  function renderList() {
    const params = new URLSearchParams(location.search);
    const state = {project: params.get('project') || '', status: params.get('state') || '',
                   cursors: [null], page: 0, timer: null};
    const projectSel = el('select', {id: 'filter-project', 'aria-label': 'project'}, el('option', {value: '', text: 'all projects'}));
    const stateSel = el('select', {id: 'filter-state', 'aria-label': 'state'},
      ['', 'queued', 'running', 'done', 'failed', 'cancelled', 'timed-out'].map(
        (s) => el('option', {value: s, text: s || 'any state'})));
    stateSel.value = state.status;
    const tbody = el('tbody', {id: 'tasks'});
    const info = el('span', {class: 'muted', id: 'list-info'});
    const prev = el('button', {type: 'button', id: 'newer', text: '← newer', disabled: true});
    const next = el('button', {type: 'button', id: 'older', text: 'older →', disabled: true});
    const head = ['Build', 'Channel', 'Source', 'State', 'Who', 'Created', 'Duration'];
    if (session.redis) head.push('Attempt');
    const table = el('table', {class: 'tasks'}, el('thead', {}, el('tr', {}, head.map((h) => el('th', {text: h})))), tbody);
    app.replaceChildren(el('section', {class: 'card'},
      el('div', {class: 'bar'}, el('h1', {text: 'Builds'}), el('span', {class: 'grow'}), projectSel, stateSel),
      el('div', {class: 'table-wrap'}, table), el('div', {class: 'bar'}, prev, next, el('span', {class: 'grow'}), info)));

    function filtersChanged() {
      state.project = projectSel.value;
      state.status = stateSel.value;
      state.cursors = [null];
      state.page = 0;
      const q = new URLSearchParams();
      if (state.project) q.set('project', state.project);
      if (state.status) q.set('state', state.status);
      history.replaceState(null, '', '/' + (q.toString() ? '?' + q : ''));
      load();
    }
    projectSel.addEventListener('change', filtersChanged);
    stateSel.addEventListener('change', filtersChanged);
    prev.addEventListener('click', () => { if (state.page > 0) { state.page -= 1; load(); } });
    next.addEventListener('click', () => { state.page += 1; load(); });

    async function load() {
      const q = new URLSearchParams({limit: '50'});
      if (state.project) q.set('project', state.project);
      if (state.status) q.set('state', state.status);
      const cursor = state.cursors[state.page];
      if (cursor) q.set('cursor', cursor);
      let data;
      try {
        data = await api('/ui/api/tasks?' + q);
      } catch (e) {
        if (e.status === 401) { renderLogin('Your session ended; sign in again.'); return; }
        info.textContent = 'could not load: ' + e.message;
        return;
      }
      state.cursors[state.page + 1] = data.next;
      const current = projectSel.value || state.project;
      projectSel.replaceChildren(el('option', {value: '', text: 'all projects'}),
        data.projects.map((p) => el('option', {value: p, text: p})));
      if (current && !data.projects.includes(current)) projectSel.appendChild(el('option', {value: current, text: current}));
      projectSel.value = current;
      tbody.replaceChildren(...data.tasks.map(row));
      if (!data.tasks.length) tbody.appendChild(el('tr', {}, el('td', {colspan: head.length, class: 'muted', text: 'No builds yet.'})));
      prev.disabled = state.page === 0;
      next.disabled = !data.next;
      info.textContent = `page ${state.page + 1} · updated ${fmtTime(Date.now())}`;
      clearTimeout(state.timer);
      if (state.page === 0) state.timer = setTimeout(() => { if (!document.hidden) load(); else state.timer = setTimeout(load, 2000); }, 2000);
    }
    function row(t) {
      const end = t.finishedAt || (FINAL.includes(t.state) ? null : Date.now());
      const dur = t.startedAt ? end - t.startedAt : (t.finishedAt ? t.finishedAt - t.createdAt : null);
      const failure = t.failedStep || t.error ? el('div', {class: 'fail' + (t.state === 'cancelled' ? ' neutral' : '')},
        t.failedStep ? el('span', {class: 'fail-step', text: 'at ' + t.failedStep}) : null, ' ',
        t.error ? el('span', {class: 'fail-reason', title: t.error, text: t.error}) : null) : null;
      const cells = [
        el('td', {'data-label': 'Build', class: 'build'}, t.prodNow ? prodMark() : null, t.prodNow ? ' ' : null, el('a', {href: '/tasks/' + encodeURIComponent(t.taskId), class: 'task-link'},
          t.number ? el('span', {class: 'num', text: buildNo(t)}) : null, t.number ? ' ' : null,
          el('span', {class: 'name', text: t.name}), ' ', el('span', {class: 'muted', text: t.version}))),
        el('td', {'data-label': 'Channel'}, el('span', {class: 'chan chan-' + (t.channel === 'prod' ? 'prod' : 'preview'), text: t.channel})),
        el('td', {'data-label': 'Source', class: 'src', text: sourceText(t.source)}),
        el('td', {'data-label': 'State', class: 'state'}, el('span', {class: stateClass(t.state), text: FINAL.includes(t.state) || t.state === 'queued' ? t.state : 'running: ' + t.step}), failure),
        el('td', {'data-label': 'Who', class: 'who-cell', text: t.who}),
        el('td', {'data-label': 'Created'}, timeEl(t.createdAt)),
        el('td', {'data-label': 'Duration', text: fmtDur(dur)}),
      ];
      if (session.redis) cells.push(el('td', {'data-label': 'Attempt', text: t.attempt || ''}));
      return el('tr', {'data-task': t.taskId}, cells);
    }
    load();
  }

  // -- ANSI colours -------------------------------------------------------------------------
  const ESC_RE = /\x1b\[([0-9;:?]*)([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[()][A-Za-z0-9]|\x1b[=>NOM78c]/g;
  function stripAnsi(s) { return s.replace(ESC_RE, ''); }
  function color256(n) {
    if (n < 16) return n;
    if (n >= 232) { const v = 8 + (n - 232) * 10; return `rgb(${v},${v},${v})`; }
    const i = n - 16, c = [0, 95, 135, 175, 215, 255];
    return `rgb(${c[Math.floor(i / 36)]},${c[Math.floor(i / 6) % 6]},${c[i % 6]})`;
  }
  function sgr(state, params) {
    const s = Object.assign({fg: null, bg: null, b: false, dim: false, i: false, u: false}, state || {});
    const p = params === '' ? [0] : params.split(/[;:]/).map((x) => parseInt(x || '0', 10));
    for (let k = 0; k < p.length; k++) {
      const c = p[k];
      if (c === 0) Object.assign(s, {fg: null, bg: null, b: false, dim: false, i: false, u: false});
      else if (c === 1) s.b = true;
      else if (c === 2) s.dim = true;
      else if (c === 3) s.i = true;
      else if (c === 4) s.u = true;
      else if (c === 22) { s.b = false; s.dim = false; }
      else if (c === 23) s.i = false;
      else if (c === 24) s.u = false;
      else if (c >= 30 && c <= 37) s.fg = c - 30;
      else if (c >= 90 && c <= 97) s.fg = c - 90 + 8;
      else if (c === 39) s.fg = null;
      else if (c >= 40 && c <= 47) s.bg = c - 40;
      else if (c >= 100 && c <= 107) s.bg = c - 100 + 8;
      else if (c === 49) s.bg = null;
      else if ((c === 38 || c === 48) && p[k + 1] === 5) { s[c === 38 ? 'fg' : 'bg'] = color256(p[k + 2] || 0); k += 2; }
      else if ((c === 38 || c === 48) && p[k + 1] === 2) {
        s[c === 38 ? 'fg' : 'bg'] = `rgb(${p[k + 2] || 0},${p[k + 3] || 0},${p[k + 4] || 0})`; k += 4;
      }
    }
    const plain = s.fg === null && s.bg === null && !s.b && !s.dim && !s.i && !s.u;
    return plain ? null : s;
  }
  // [segments, state at the end] of one raw line starting in `state`
  function ansiSegments(raw, state) {
    const segs = [];
    let last = 0, m;
    ESC_RE.lastIndex = 0;
    while ((m = ESC_RE.exec(raw)) !== null) {
      if (m.index > last) segs.push([raw.slice(last, m.index), state]);
      if (m[2] === 'm') state = sgr(state, m[1]);
      last = ESC_RE.lastIndex;
    }
    if (last < raw.length) segs.push([raw.slice(last), state]);
    return [segs, state];
  }
  function styledSpan(text, s) {
    const span = document.createElement('span');
    span.textContent = text;
    if (s) {
      const cls = [];
      if (typeof s.fg === 'number') cls.push('fg' + s.fg); else if (s.fg) span.style.color = s.fg;
      if (typeof s.bg === 'number') cls.push('bg' + s.bg); else if (s.bg) span.style.backgroundColor = s.bg;
      if (s.b) cls.push('ab');
      if (s.dim) cls.push('adim');
      if (s.i) cls.push('ai');
      if (s.u) cls.push('au');
      span.className = cls.join(' ');
    }
    return span;
  }

  // -- the log: every line kept, only the visible ones in the DOM ---------------------------
  class LogView {
    constructor() {
      this.lines = [];            // text without escape sequences (search, plain rendering)
      this.kinds = [];            // 0 stdout, 1 stderr, 2 step, 3 final ok, 4 final not ok
      this.raw = new Map();       // line -> raw text, for lines with colours
      this.startState = new Map();
      this.state = null;          // ANSI state at the end of the last line
      this.filter = null;         // indices of the lines shown, while searching or with a step folded
      this.query = '';
      this.sec = [];              // per line: index into this.sections (-1: before the first step, the final line)
      this.sections = [];         // one per step message: {name, line, collapsed}
      this.firstError = -1;       // the first line that reads as an error
      this.hit = -1;              // the line "first error" jumped to (highlighted)
      this.follow = true;
      this.pending = false;
      this.scroller = el('div', {class: 'log-scroll', id: 'log', tabindex: '0', role: 'log', 'aria-live': 'off'});
      this.spacer = el('div', {class: 'log-spacer'});
      this.rows = el('div', {class: 'log-rows', id: 'log-rows'});
      this.rows.addEventListener('click', (ev) => {  // a step's heading folds and unfolds its lines
        const head = ev.target.closest('.log-row.step');
        if (head) this.toggle(Number(head.dataset.section));
      });
      this.spacer.appendChild(this.rows);
      this.scroller.appendChild(this.spacer);
      this.scroller.addEventListener('scroll', () => {
        const s = this.scroller;
        this.follow = s.scrollTop + s.clientHeight >= s.scrollHeight - ROW_H * 2;
        this.schedule();
      });
      window.addEventListener('resize', () => this.schedule());
    }
    add(text, kind, stepName) {
      let line = text;
      if (line.endsWith('\r')) line = line.slice(0, -1);
      const cr = line.lastIndexOf('\r');
      if (cr >= 0) line = line.slice(cr + 1);  // a terminal would have overwritten the rest
      const idx = this.lines.length;
      if (line.indexOf('\x1b') >= 0 || this.state !== null) {
        if (this.state !== null) this.startState.set(idx, this.state);
        this.raw.set(idx, line);
        if (line.indexOf('\x1b') >= 0) {
          this.state = ansiSegments(line, this.state)[1];
          line = stripAnsi(line);
        }
      }
      this.lines.push(line);
      this.kinds.push(kind);
      if (kind === 2) this.sections.push({name: stepName, line: idx, collapsed: false});
      const sec = kind === 2 || kind === 0 || kind === 1 ? this.sections.length - 1 : -1;
      this.sec.push(sec);
      if (this.firstError < 0 && kind < 2 && ERROR_RE.test(line)) this.firstError = idx;
      if (this.filter && this.shown(idx)) this.filter.push(idx);
    }
    matches(idx) { return this.lines[idx].toLowerCase().indexOf(this.query) >= 0; }
    // a line is shown unless its step is folded (its heading always is) or a search leaves it out
    shown(idx) {
      const sec = this.sec[idx];
      if (sec >= 0 && this.sections[sec].collapsed && this.kinds[idx] !== 2) return false;
      return !this.query || this.matches(idx);
    }
    refilter() {
      if (!this.query && !this.sections.some((x) => x.collapsed)) { this.filter = null; }
      else {
        const out = [];
        for (let i = 0; i < this.lines.length; i++) if (this.shown(i)) out.push(i);
        this.filter = out;
      }
      this.schedule();
    }
    search(q) {
      this.query = q.toLowerCase();
      this.refilter();
      if (!this.query) return this.lines.length;
      let n = 0;
      for (const i of this.filter) if (this.matches(i)) n += 1;
      return n;
    }
    toggle(sec, open) {
      const x = this.sections[sec];
      if (!x) return;
      x.collapsed = open === undefined ? !x.collapsed : !open;
      this.refilter();
    }
    // fold every step but the one named (the last of that name: a retried attempt runs it again)
    foldAllBut(name) {
      let keep = -1;
      this.sections.forEach((x, i) => { if (x.name === name) keep = i; });
      this.sections.forEach((x, i) => { x.collapsed = i !== keep; });
      this.refilter();
      return keep;
    }
    lastSection(name) {
      let found = -1;
      this.sections.forEach((x, i) => { if (x.name === name) found = i; });
      return found;
    }
    // scroll line idx into view (a third down), unfolding its step
    reveal(idx, mark) {
      const sec = this.sec[idx];
      if (sec >= 0 && this.sections[sec].collapsed) this.toggle(sec, true);
      if (mark) this.hit = idx;
      const pos = this.filter ? this.filter.indexOf(idx) : idx;
      if (pos < 0) return;
      this.follow = false;
      const s = this.scroller;
      this.spacer.style.height = (this.count() * ROW_H) + 'px';
      s.scrollTop = Math.max(0, pos * ROW_H - Math.floor(s.clientHeight / 3));
      this.schedule();
    }
    count() { return this.filter ? this.filter.length : this.lines.length; }
    schedule() {
      if (this.pending) return;
      this.pending = true;
      requestAnimationFrame(() => { this.pending = false; this.render(); });
    }
    toEnd() { this.follow = true; this.schedule(); }
    render() {
      const n = this.count();
      const s = this.scroller;
      this.spacer.style.height = (n * ROW_H) + 'px';
      if (this.follow) s.scrollTop = s.scrollHeight;
      const first = Math.max(0, Math.floor(s.scrollTop / ROW_H) - OVERSCAN);
      const last = Math.min(n, Math.ceil((s.scrollTop + s.clientHeight) / ROW_H) + OVERSCAN);
      this.rows.style.transform = `translateY(${first * ROW_H}px)`;
      const out = [];
      for (let i = first; i < last; i++) out.push(this.row(this.filter ? this.filter[i] : i));
      this.rows.replaceChildren(...out);
    }
    row(idx) {
      const kind = this.kinds[idx];
      const div = document.createElement('div');
      div.className = 'log-row' + (kind === 1 ? ' err' : kind === 2 ? ' step' : kind === 3 ? ' fin-ok' : kind === 4 ? ' fin-bad' : '')
        + (idx === this.hit ? ' hit' : '');
      if (kind === 2) {
        const sec = this.sec[idx], x = this.sections[sec];
        div.dataset.section = String(sec);
        div.dataset.step = x.name;
        div.id = 'log-step-' + sec;
        div.setAttribute('role', 'button');
        div.setAttribute('aria-expanded', x.collapsed ? 'false' : 'true');
        div.title = x.collapsed ? 'show this step\'s lines' : 'fold this step\'s lines';
      }
      const ln = document.createElement('span');
      ln.className = 'ln';
      ln.textContent = kind === 2 ? (this.sections[this.sec[idx]].collapsed ? '▸ ' : '▾ ') + (idx + 1) : String(idx + 1);
      const text = document.createElement('span');
      text.className = 'tx';
      if (this.raw.has(idx)) {
        for (const [t, st] of ansiSegments(this.raw.get(idx), this.startState.get(idx) || null)[0]) text.appendChild(styledSpan(t, st));
      } else if (this.query) {
        const line = this.lines[idx], low = line.toLowerCase();
        let at = 0, hit;
        while ((hit = low.indexOf(this.query, at)) >= 0) {
          text.appendChild(document.createTextNode(line.slice(at, hit)));
          text.appendChild(el('mark', {text: line.slice(hit, hit + this.query.length)}));
          at = hit + this.query.length;
        }
        text.appendChild(document.createTextNode(line.slice(at)));
      } else {
        text.textContent = this.lines[idx];
      }
      div.append(ln, text);
      return div;
    }
  }

  // -- one task -----------------------------------------------------------------------------
  async function renderTask(taskId) {
    let task;
    try {
      task = await api('/ui/api/tasks/' + encodeURIComponent(taskId));
    } catch (e) {
      if (e.status === 401) return renderLogin('Your session ended; sign in again.');
      app.replaceChildren(el('section', {class: 'card'}, el('h1', {text: 'Task not found'}),
        el('p', {id: 'task-error', class: 'error', text: e.message}), el('p', {}, el('a', {href: '/', text: '← all builds'}))));
      return;
    }
    const view = new LogView();
    const timeline = {};
    let current = null, lastSeq = 0, ended = false, source = null, retryTimer = null;
    const title = el('h1', {id: 'task-title'}, task.number ? el('span', {class: 'num', id: 'task-number', text: buildNo(task)}) : null,
                      task.number ? ' ' : null, el('span', {class: 'name', text: task.name}), ' ',
                      el('span', {class: 'muted', text: task.version}));
    const stateEl = el('span', {id: 'task-state'});
    const prodNow = prodMark('task-prod');
    const live = el('span', {id: 'live', class: 'live'});
    const meta = el('dl', {class: 'meta'});
    const steps = el('ol', {class: 'timeline', id: 'timeline'});
    const artifacts = el('div', {id: 'artifacts'});
    const cancelBox = el('div', {class: 'cancel-box'});
    const actions = el('div', {class: 'actions', id: 'actions'});
    const jumpError = el('button', {type: 'button', class: 'small', id: 'jump-error', hidden: true, text: 'first error ↓',
                                    onclick: () => { if (view.firstError >= 0) view.reveal(view.firstError, true); }});
    let folded = false;
    const cmd = el('code', {id: 'attach-cmd', text: task.attach});
    const copy = el('button', {type: 'button', class: 'small', text: 'Copy', onclick: async () => {
      try { await navigator.clipboard.writeText(task.attach); copy.textContent = 'Copied'; }
      catch (e) { const r = document.createRange(); r.selectNodeContents(cmd); getSelection().removeAllRanges(); getSelection().addRange(r); }
    }});
    const search = el('input', {type: 'search', id: 'log-search', placeholder: 'search the log', 'aria-label': 'search the log'});
    const found = el('span', {class: 'muted', id: 'log-count'});
    const toEnd = el('button', {type: 'button', class: 'small', id: 'log-end', text: 'follow ↓', onclick: () => view.toEnd()});
    let searchTimer = null;
    search.addEventListener('input', () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => {
        const n = view.search(search.value);
        found.textContent = search.value ? `${n} matching line${n === 1 ? '' : 's'}` : '';
      }, 150);
    });

    // the header, the steps and the log first: a running build's log is in view without scrolling
    // (the artifacts, which only a finished build has, come after it)
    const artifactsCard = el('section', {class: 'card', id: 'artifacts-card'}, el('h2', {text: 'Artifacts'}), artifacts);
    app.replaceChildren(
      el('p', {class: 'crumbs'}, el('a', {href: '/', text: '← all builds'})),
      el('section', {class: 'card head'},
        el('div', {class: 'bar'}, title, stateEl, prodNow, el('span', {class: 'grow'}), live),
        meta,
        el('div', {class: 'bar'}, el('span', {class: 'muted', text: 'Follow in a terminal:'}), cmd, copy,
           el('span', {class: 'grow'}), actions, cancelBox),
        steps),
      el('section', {class: 'card'},
        el('div', {class: 'bar'}, el('h2', {text: 'Log'}), search, found, jumpError, el('span', {class: 'grow'}), toEnd,
           el('a', {href: `/ui/api/tasks/${encodeURIComponent(task.taskId)}/log`, id: 'download-log', download: `${task.taskId}.log`, text: 'download full log'})),
        view.scroller),
      artifactsCard);

    function renderMeta() {
      const end = task.finishedAt || (FINAL.includes(task.state) ? null : Date.now());
      const items = [['Channel', task.channel], ['Source', sourceText(task.source)], ['Who', task.who],
        ['Queued', timeEl(task.createdAt)], ['Started', timeEl(task.startedAt)], ['Ended', timeEl(task.finishedAt)],
        ['Duration', fmtDur(task.startedAt ? end - task.startedAt : null)]];
      if (session.redis && task.attempt) items.push(['Attempt', String(task.attempt)]);
      if (task.retryOf) items.push(['Retry of', el('a', {href: '/tasks/' + encodeURIComponent(task.retryOf), id: 'retry-of', text: task.retryOf.slice(0, 8)})]);
      if (task.failedStep && task.state !== 'cancelled') items.push(['Failed step', task.failedStep]);
      if (task.error) items.push(['Error', task.error]);
      meta.replaceChildren(...items.map(([k, v]) => el('div', {class: k === 'Error' ? 'wide' : null, 'data-meta': k},
        el('dt', {text: k}), typeof v === 'object' ? el('dd', {}, v) : el('dd', {text: v, title: k === 'Source' ? v : null}))));
      artifactsCard.hidden = !FINAL.includes(task.state);
      prodNow.hidden = !task.prodNow;
      stateEl.className = stateClass(task.state);
      stateEl.textContent = FINAL.includes(task.state) || task.state === 'queued' ? task.state : 'running: ' + task.step;
      renderCancel();
      renderActions();
    }
    // retry (a finished git build, as a new task) and promote (a successful build becomes prod)
    function renderActions() {
      if (!FINAL.includes(task.state) || actions.dataset.busy) { if (!FINAL.includes(task.state)) actions.replaceChildren(); return; }
      if (actions.dataset.shown === task.state) return;
      actions.dataset.shown = task.state;
      const note = el('span', {id: 'action-note', class: 'muted', role: 'status'});
      const post = async (btn, what, done) => {
        btn.disabled = true;
        actions.dataset.busy = '1';
        note.className = 'muted';
        note.textContent = what + '…';
        try {
          done(await api(`/ui/api/tasks/${encodeURIComponent(task.taskId)}/${what}`, {method: 'POST'}));
        } catch (e) {
          note.className = 'error';
          note.textContent = `${what} failed: ${e.message}`;
          btn.disabled = false;
        }
        delete actions.dataset.busy;
      };
      const kids = [];
      if (task.source && task.source.kind === 'git') {
        const retry = el('button', {type: 'button', id: 'retry', text: 'Retry', title: 'build the same commit again as a new task',
          onclick: () => post(retry, 'retry', (got) => location.assign('/tasks/' + encodeURIComponent(got.taskId)))});
        kids.push(retry);
      }
      if (task.state === 'done') {
        const label = task.channel === 'prod' ? 'Roll back prod to this build' : 'Promote to prod';
        const promote = el('button', {type: 'button', id: 'promote', text: label, title: 'point the project\'s prod URL at this build',
          onclick: () => post(promote, 'promote', () => {
            note.className = 'ok'; note.textContent = 'prod now serves this build';
            task.prodNow = true; prodNow.hidden = false;
          })});
        kids.push(promote);
      }
      actions.replaceChildren(...kids, note);
    }
    function renderCancel() {
      if (FINAL.includes(task.state)) { cancelBox.replaceChildren(); return; }
      if (cancelBox.dataset.asking) return;
      cancelBox.replaceChildren(el('button', {type: 'button', id: 'cancel', class: 'danger', text: 'Cancel build', onclick: () => {
        cancelBox.dataset.asking = '1';
        const no = el('button', {type: 'button', id: 'cancel-no', text: 'Keep running', onclick: () => { delete cancelBox.dataset.asking; renderCancel(); }});
        const yes = el('button', {type: 'button', id: 'cancel-yes', class: 'danger', text: 'Yes, cancel it', onclick: async () => {
          yes.disabled = true;
          try {
            await api(`/ui/api/tasks/${encodeURIComponent(task.taskId)}/cancel`, {method: 'POST'});
            cancelBox.replaceChildren(el('span', {class: 'muted', id: 'cancel-sent', text: 'cancelling…'}));
          } catch (e) {
            cancelBox.replaceChildren(el('span', {class: 'error', text: 'cancel failed: ' + e.message}));
          }
          delete cancelBox.dataset.asking;
        }});
        cancelBox.replaceChildren(el('span', {text: 'Cancel this build? '}), yes, ' ', no);
      }}));
    }
    function renderArtifacts() {
      if (!task.artifacts || !task.artifacts.length) {
        artifacts.replaceChildren(el('p', {class: 'muted', text: FINAL.includes(task.state) ? 'No artifacts.' : 'Artifacts appear when the build is done.'}));
        return;
      }
      const list = el('ul', {class: 'artifacts'}, task.artifacts.map((a) => el('li', {},
        el('a', {href: a.path.startsWith('/artifacts/') ? a.path : '#', rel: 'noopener noreferrer', target: '_blank', text: a.name}),
        ' ', el('span', {class: 'muted', text: fmtSize(a.size)}))));
      const kids = [list];
      // the deployment at its own origin (its scripts run there); a build from before deployments: its file list
      const site = task.deploymentUrl || task.url;
      if (task.aliases && task.aliases.length) kids.unshift(el('p', {id: 'aliases'}, el('span', {class: 'muted', text: 'Aliases: '}),
        task.aliases.flatMap((a, i) => [i ? ', ' : null, el('span', {class: 'muted', text: a.kind + ' '}),
          el('a', {href: a.url, class: 'alias', 'data-kind': a.kind, rel: 'noopener noreferrer', target: '_blank', text: a.url})])));
      // signed provenance (what built these files) and, for a build-cache hit, the build that made them
      if (task.provenanceUrl) kids.unshift(el('p', {id: 'provenance'}, el('span', {class: 'muted', text: 'Provenance (signed): '}),
        el('a', {href: task.provenanceUrl, rel: 'noopener noreferrer', target: '_blank', text: task.provenanceUrl})));
      if (task.cachedFrom) kids.unshift(el('p', {id: 'cached-from'}, el('span', {class: 'muted', text: 'from cache: '}),
        el('a', {href: '/tasks/' + encodeURIComponent(task.cachedFrom.taskId), text: '#' + task.cachedFrom.number}),
        el('span', {class: 'muted', text: ' (install and build skipped; the same source, command and toolchain)'})));
      if (site) kids.unshift(el('p', {}, el('span', {class: 'muted', text: (task.channel === 'prod' ? 'Prod' : 'Preview') + ' URL: '}),
        el('a', {href: site, id: 'site-url', rel: 'noopener noreferrer', target: '_blank', text: site})));
      artifacts.replaceChildren(...kids);
    }
    function renderSteps() {
      const now = Date.now();
      steps.replaceChildren(...STEPS.map((name) => {
        const t = timeline[name] || {};
        const outcome = t.outcome || 'pending';
        const dur = t.start ? (t.end || (outcome === 'running' ? now : t.start)) - t.start : null;
        const sec = view.lastSection(name);
        const link = sec >= 0 ? el('a', {href: '#log-step-' + sec, class: 'tl-name', text: name, onclick: (ev) => {
          ev.preventDefault();
          view.reveal(view.sections[sec].line, false);
        }}) : el('span', {class: 'tl-name', text: name});
        return el('li', {class: 'tl tl-' + outcome, 'data-step': name}, link,
          el('span', {class: 'tl-out', text: outcome}),
          el('span', {class: 'tl-dur', text: t.start ? fmtDur(dur) : ''}));
      }));
    }
    function onStep(name, ts) {
      const at = STEPS.indexOf(name);
      for (let i = at + 1; i < STEPS.length; i++) delete timeline[STEPS[i]];  // a retried attempt starts again
      if (current && current !== name && timeline[current] && !timeline[current].end) {
        timeline[current].end = ts;
        timeline[current].outcome = 'ok';
      }
      timeline[name] = {start: ts, outcome: 'running'};
      current = name;
      task.state = name;
      task.step = name;
      if (name === 'prepare') task.startedAt = ts;
    }
    function onFinal(state, ts, payload) {
      const failedAt = payload.step || current;
      if (current && timeline[current]) {
        timeline[current].end = timeline[current].end || ts;
        timeline[current].outcome = state === 'done' ? 'ok' : (current === failedAt ? state : 'ok');
      }
      if (state !== 'done' && failedAt && !timeline[failedAt]) timeline[failedAt] = {start: ts, end: ts, outcome: state};
      for (const name of STEPS) if (!timeline[name]) timeline[name] = {outcome: state === 'done' ? 'ok' : 'skipped'};
      task.state = state;
      task.finishedAt = ts;
    }
    function onMessages(msgs) {
      for (const msg of msgs) {
        const seq = msg.meta.seq;
        if (seq <= lastSeq) continue;          // already shown (never twice)
        if (seq !== lastSeq + 1) return false; // a gap: resume from lastSeq
        lastSeq = seq;
        const action = msg.data.action, payload = msg.data.payload || {};
        const text = String(payload.message === undefined ? '' : payload.message);
        if (action === 'log') {
          const kind = payload.stream === 'stderr' ? 1 : 0;
          for (const line of text.split('\n')) view.add(line, kind);
        } else if (STEPS.includes(action)) {
          onStep(action, msg.meta.timestamp);
          view.add(`==> ${action}: ${text}`, 2, action);
        } else {
          view.add(`==> ${action}: ${text}`, action === 'done' ? 3 : 4);
          if (FINAL.includes(action)) onFinal(action, msg.meta.timestamp, payload);
        }
      }
      return true;
    }
    function connect() {
      clearTimeout(retryTimer);
      if (source) source.close();
      source = new EventSource(`/ui/api/tasks/${encodeURIComponent(task.taskId)}/events?after=${lastSeq}`);
      source.onopen = () => { live.textContent = '● live'; live.className = 'live on'; };
      source.onmessage = (ev) => {
        const ok = onMessages(JSON.parse(ev.data));
        view.schedule();
        renderSteps();
        renderMeta();
        jumpError.hidden = view.firstError < 0;
        if (!ok) connect();
      };
      source.addEventListener('end', async () => {
        source.close();
        ended = true;
        live.textContent = 'finished';
        live.className = 'live';
        try { task = Object.assign(task, await api('/ui/api/tasks/' + encodeURIComponent(task.taskId))); } catch (e) { /* keep what we have */ }
        renderMeta();
        renderSteps();
        renderArtifacts();
        jumpError.hidden = view.firstError < 0;
        // a build that failed opens at its failed step: the other steps are folded
        if (!folded && task.state !== 'done' && FINAL.includes(task.state)) {
          folded = true;
          const failed = task.failedStep || current;
          const sec = view.foldAllBut(failed);
          if (sec >= 0) view.toEnd();
        }
      });
      source.onerror = () => {
        if (ended) return;
        live.textContent = 'reconnecting…';
        live.className = 'live off';
        if (source.readyState === EventSource.CLOSED) retryTimer = setTimeout(connect, 2000);
      };
    }
    timeline.queued = {start: task.createdAt, outcome: 'running'};
    current = 'queued';
    renderMeta();
    renderSteps();
    renderArtifacts();
    connect();
    setInterval(() => { if (!ended && !FINAL.includes(task.state)) { renderSteps(); renderMeta(); } }, 1000);
    window.__flowLog = view;  // tests and the benchmark look at the log model
  }

  // -- start ----------------------------------------------------------------------------------
  async function start() {
    try {
      session = await api('/ui/api/session');
    } catch (e) {
      if (e.status === 401) return renderLogin('');
      app.replaceChildren(el('p', {class: 'error', text: 'The server did not answer: ' + e.message}));
      return;
    }
    document.getElementById('who').textContent = 'signed in as ' + session.who;
    const out = document.getElementById('signout');
    out.hidden = false;
    out.onclick = signOut;
    const m = location.pathname.match(/^\/tasks\/([0-9a-f]+)$/);
    if (m) renderTask(m[1]);
    else renderList();
  }
  start();
})();
