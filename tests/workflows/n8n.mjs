// Runs an n8n workflow file the way n8n 2.x executes it, for the nodes the syncbridge workflows
// use: Webhook (the trigger body), Code (all items at once), If (boolean conditions), Wait
// (seconds), and HTTP Request with n8n's pagination (update a parameter, or the response's next
// URL; "complete when" an expression; the pause between requests; a non-2xx page that does not
// complete the pagination fails the node, one that completes it is its last page), batching,
// full responses, Never Error, Retry On Fail and the error output. Real n8n is 2.3 GB and too
// heavy for CI (`timeScale` shortens Retry On Fail's waits, `paceScale` the pause between pages); what this models follows n8n's RequestHelperFunctions and HttpRequestV3, so the
// workflows' own code and settings are what the tests exercise.
//
// Requests go to the real URLs with their origin rewritten (`rewrite`), so stand-ins of the
// vendors' APIs answer them over loopback.

const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** An item with the items it came from, per node: what n8n's paired items let `itemMatching` find. */
function item(json, from, node) {
  const lineage = new Map(from?.lineage ?? []);
  const it = { json, lineage };
  lineage.set(node, it);
  return it;
}

export class NodeError extends Error {
  constructor(message, extra = {}) {
    super(message);
    Object.assign(this, extra);
  }
}

export async function runWorkflow(workflow, options) {
  const { body, rewrite = (u) => u, credentials = {}, timeScale = 1, paceScale = 1, log = () => {} } = options;
  const nodes = new Map(workflow.nodes.map((n) => [n.name, n]));
  const runs = new Map(); // node name → outputs of each run: [[items of output 0], [output 1], …]
  const requests = [];

  const accessor = (current) => (name) => {
    const ran = runs.get(name) ?? [];
    const latest = () => {
      if (!ran.length) throw new NodeError(`node '${name}' has not run (referenced from '${current.name}')`);
      return ran[ran.length - 1][0] ?? [];
    };
    return {
      get isExecuted() {
        return ran.length > 0;
      },
      first: () => latest()[0],
      last: () => latest()[latest().length - 1],
      all: () => latest(),
      itemMatching: (index) => {
        const found = current.input[index]?.lineage.get(name);
        if (!found) throw new NodeError(`no item of '${name}' pairs with item ${index} of '${current.name}'`);
        return found;
      },
    };
  };

  const evaluate = (value, scope) => {
    if (Array.isArray(value)) return value.map((v) => evaluate(v, scope));
    if (value && typeof value === 'object') {
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, evaluate(v, scope)]));
    }
    if (typeof value !== 'string' || !value.startsWith('=')) return value;
    const text = value.slice(1);
    const names = Object.keys(scope);
    const run = (expr) => new Function(...names, `return (${expr});`)(...names.map((n) => scope[n]));
    const whole = text.match(/^\{\{([\s\S]*)\}\}$/);
    if (whole && !whole[1].includes('{{')) return run(whole[1]);
    return text.replace(/\{\{([\s\S]*?)\}\}/g, (_, expr) => String(run(expr)));
  };

  async function request(node, options) {
    const url = new URL(rewrite(options.url));
    for (const [k, v] of Object.entries(options.qs ?? {})) {
      if (v !== undefined && v !== null) url.searchParams.set(k, String(v));
    }
    const headers = { ...(options.headers ?? {}) };
    const p = node.parameters;
    if (p.authentication === 'predefinedCredentialType') {
      headers.authorization = `Bearer ${credentials[p.nodeCredentialType] ?? 'token'}`;
    } else if (p.authentication === 'genericCredentialType' && p.genericAuthType === 'httpHeaderAuth') {
      const c = credentials.httpHeaderAuth ?? { name: 'Authorization', value: 'Bearer sbk_test' };
      headers[c.name.toLowerCase()] = c.value;
    }
    let payload;
    if (options.body !== undefined) {
      headers['content-type'] = 'application/json';
      payload = typeof options.body === 'string' ? options.body : JSON.stringify(options.body);
    }
    const started = Date.now();
    const response = await fetch(url, { method: options.method ?? 'GET', headers, body: payload });
    const text = await response.text();
    let parsed = text;
    if ((response.headers.get('content-type') ?? '').includes('json') && text) parsed = JSON.parse(text);
    requests.push({ node: node.name, method: options.method ?? 'GET', url: url.toString(), status: response.status, started });
    log(`${node.name}: ${options.method ?? 'GET'} ${url} → ${response.status}`);
    return {
      statusCode: response.status,
      statusMessage: response.statusText,
      headers: Object.fromEntries(response.headers.entries()),
      body: parsed,
    };
  }

  const failure = (response) =>
    new NodeError(`${response.statusCode} - ${JSON.stringify(response.body)}`, {
      httpCode: String(response.statusCode),
      description: typeof response.body === 'string' ? response.body : JSON.stringify(response.body),
    });

  /** The request one HTTP Request node makes for one item, its parameters resolved. */
  function requestOptions(node, scope) {
    // The pagination's expressions are resolved per page, with $response; not here.
    const { pagination, ...options } = node.parameters.options ?? {};
    const p = evaluate({ ...node.parameters, options }, scope);
    const parse = (v) => (typeof v === 'string' ? (v.trim() ? JSON.parse(v) : {}) : v ?? {});
    const pairs = (list) => Object.fromEntries((list?.parameters ?? []).map((x) => [x.name, x.value]));
    return {
      method: p.method ?? 'GET',
      url: p.url,
      qs: p.sendQuery ? (p.specifyQuery === 'json' ? parse(p.jsonQuery) : pairs(p.queryParameters)) : {},
      headers: p.sendHeaders ? (p.specifyHeaders === 'json' ? parse(p.jsonHeaders) : pairs(p.headerParameters)) : {},
      body: p.sendBody ? (p.specifyBody === 'json' ? parse(p.jsonBody) : pairs(p.bodyParameters)) : undefined,
      options: p.options ?? {},
    };
  }

  async function paginate(node, input, index, scope, base) {
    const pagination = node.parameters.options.pagination.pagination;
    const pages = [];
    let response = {};
    let pageCount = 0;
    let current = base;
    for (;;) {
      response = await request(node, current);
      pages.push(response);
      pageCount += 1;
      const keys = { ...scope, $response: response, $pageCount: pageCount, $request: base };
      const max = Number(evaluate(pagination.maxRequests, keys));
      if (pagination.limitPagesFetched && max && pageCount >= max) break;
      let complete;
      if (pagination.paginationCompleteWhen === 'responseIsEmpty') {
        complete = Array.isArray(response.body) ? !response.body.length : !response.body;
      } else if (pagination.paginationCompleteWhen === 'receiveSpecificStatusCodes') {
        complete = String(pagination.statusCodesWhenComplete).split(',').map(Number).includes(response.statusCode);
      } else {
        complete = Boolean(evaluate(pagination.completeExpression, keys));
      }
      if (complete) break;
      if (pagination.requestInterval) await sleep(Number(evaluate(pagination.requestInterval, keys)) * paceScale);
      if (response.statusCode < 200 || response.statusCode >= 300) throw failure(response);
      current = { ...base, qs: { ...base.qs }, headers: { ...base.headers } };
      if (base.body && typeof base.body === 'object') current.body = { ...base.body };
      if (pagination.paginationMode === 'responseContainsNextURL') {
        current.url = evaluate(pagination.nextURL, keys);
      } else {
        for (const param of pagination.parameters?.parameters ?? []) {
          const value = evaluate(param.value, keys);
          if (param.type === 'qs') current.qs[param.name] = value;
          else if (param.type === 'body') current.body[param.name] = value;
          else current.headers[param.name] = value;
        }
      }
    }
    return pages;
  }

  async function httpRequest(node, input) {
    const settings = node.parameters.options ?? {};
    const full = settings.response?.response?.fullResponse;
    const neverError = settings.response?.response?.neverError;
    const batching = settings.batching?.batch;
    const main = [];
    const errors = [];
    // Like n8n, every item's request starts (batchInterval apart) before any is awaited.
    const pending = [];
    for (let i = 0; i < input.length; i += 1) {
      const scope = { $json: input[i].json, $input: { item: input[i] }, $: accessor({ name: node.name, input }), $itemIndex: i };
      if (i > 0 && batching?.batchInterval > 0 && i % (batching.batchSize || 1) === 0) await sleep(batching.batchInterval);
      const options = requestOptions(node, scope);
      pending.push(
        (async () => {
          if (node.parameters.options?.pagination) return paginate(node, input, i, scope, options);
          const response = await request(node, options);
          if (!neverError && (response.statusCode < 200 || response.statusCode >= 300)) throw failure(response);
          return [response];
        })(),
      );
    }
    const settled = await Promise.allSettled(pending);
    settled.forEach((result, i) => {
      if (result.status === 'rejected') {
        const e = result.reason;
        if (node.onError !== 'continueErrorOutput') throw e;
        errors.push(item({ error: { message: e.message, description: e.description, httpCode: e.httpCode } }, input[i], node.name));
        return;
      }
      for (const response of result.value) {
        main.push(item(full ? response : response.body, input[i], node.name));
      }
    });
    return [main, errors];
  }

  async function execute(node, input) {
    switch (node.type) {
      case 'n8n-nodes-base.webhook':
        return [[item({ headers: {}, params: {}, query: {}, body }, null, node.name)]];
      case 'n8n-nodes-base.code': {
        const $input = { all: () => input, first: () => input[0], last: () => input[input.length - 1] };
        const returned = await new AsyncFunction('$input', '$', node.parameters.jsCode)($input, accessor({ name: node.name, input }));
        return [returned.map((r, i) => item(r.json, input.length === returned.length ? input[i] : input[0], node.name))];
      }
      case 'n8n-nodes-base.if': {
        const yes = [];
        const no = [];
        input.forEach((it, i) => {
          const scope = { $json: it.json, $: accessor({ name: node.name, input }), $itemIndex: i };
          const conditions = node.parameters.conditions.conditions.map((c) => {
            const left = evaluate(c.leftValue, scope);
            if (c.operator.type === 'boolean' && c.operator.operation === 'true') return left === true;
            throw new NodeError(`If operator ${JSON.stringify(c.operator)} is not modelled`);
          });
          const pass = node.parameters.conditions.combinator === 'or' ? conditions.some(Boolean) : conditions.every(Boolean);
          (pass ? yes : no).push(item(it.json, it, node.name));
        });
        return [yes, no];
      }
      case 'n8n-nodes-base.wait': {
        const scope = { $json: input[0].json, $: accessor({ name: node.name, input }) };
        const amount = Number(evaluate(node.parameters.amount, scope));
        const unit = { seconds: 1000, minutes: 60000, hours: 3600000 }[node.parameters.unit ?? 'seconds'];
        // Real time: what the tests check is that a retry came after the source's Retry-After.
        await sleep(amount * unit);
        return [input.map((it) => item(it.json, it, node.name))];
      }
      case 'n8n-nodes-base.httpRequest': {
        const tries = node.retryOnFail ? Math.min(node.maxTries ?? 3, 5) : 1;
        for (let attempt = 1; ; attempt += 1) {
          try {
            return await httpRequest(node, input);
          } catch (e) {
            if (attempt >= tries) throw e;
            await sleep(Math.min(node.waitBetweenTries ?? 1000, 5000) * timeScale);
          }
        }
      }
      default:
        throw new NodeError(`node type ${node.type} is not modelled`);
    }
  }

  async function run(name, input) {
    const node = nodes.get(name);
    const outputs = await execute(node, input);
    if (!runs.has(name)) runs.set(name, []);
    runs.get(name).push(outputs);
    // Execution order v1: one branch after the other, the topmost node on the canvas first
    // (then the leftmost), each branch run to its end before the next starts.
    const next = [];
    for (const [index, targets] of (workflow.connections[name]?.main ?? []).entries()) {
      const items = outputs[index] ?? [];
      if (items.length) for (const target of targets) next.push({ node: target.node, items });
    }
    const at = (n) => nodes.get(n).position;
    next.sort((a, b) => at(a.node)[1] - at(b.node)[1] || at(a.node)[0] - at(b.node)[0]);
    for (const { node: target, items } of next) await run(target, items);
  }

  const trigger = workflow.nodes.find((n) => n.type === 'n8n-nodes-base.webhook');
  await run(trigger.name, []);
  return { requests, runs };
}
