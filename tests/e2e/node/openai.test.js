// End-to-end tests of `spindle serve` with the official OpenAI SDK. The server is started by
// tests/e2e/test_openai.sh, which passes its URL in SPINDLE_URL (and SPINDLE_KEY, the API key
// it was started with). The model is stories260K, whose greedy story is known.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const baseURL = `${process.env.SPINDLE_URL}/v1`;
const apiKey = process.env.SPINDLE_KEY;
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60000 });
const STORY = ', there was a little girl named Lily.';

test('models.list names the served model', async () => {
  const list = await client.models.list();
  assert.equal(list.data.length, 1);
  assert.equal(list.data[0].object, 'model');
  assert.equal(list.data[0].id, 'stories260K.gguf');
});

test('completion: greedy text, shape and usage', async () => {
  const r = await client.completions.create({
    model: 'stories260K.gguf', prompt: 'Once upon a time', max_tokens: 20, temperature: 0,
  });
  assert.match(r.id, /^cmpl-/);
  assert.equal(r.object, 'text_completion');
  assert.equal(typeof r.created, 'number');
  assert.equal(r.choices.length, 1);
  assert.ok(r.choices[0].text.startsWith(STORY), r.choices[0].text);
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.prompt_tokens, 5);
  assert.equal(r.usage.completion_tokens, 20);
  assert.equal(r.usage.total_tokens, 25);
});

test('completion: streaming gives the same text, then [DONE], with usage when asked', async () => {
  // 200 tokens (ignore_eos: a Spindle extension, sent as is): the server joins into one chunk
  // what the engine wrote while its loop was busy, so a short stream can come in a few chunks
  // on a loaded machine; a long one cannot.
  const whole = await client.completions.create({
    prompt: 'Once upon a time', max_tokens: 200, temperature: 0, model: 'x', ignore_eos: true,
  });
  const stream = await client.completions.create({
    prompt: 'Once upon a time', max_tokens: 200, temperature: 0, model: 'x', stream: true,
    stream_options: { include_usage: true }, ignore_eos: true,
  });
  let text = '';
  let finish = null;
  let usage = null;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.text;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.ok(chunks > 5, `only ${chunks} chunks`);
  assert.equal(text, whole.choices[0].text);
  assert.equal(finish, 'length');
  assert.equal(usage.completion_tokens, 200);
  assert.equal(usage.prompt_tokens, 5);
});

test('chat completion: message shape, streaming deltas', async () => {
  const r = await client.chat.completions.create({
    model: 'x', messages: [{ role: 'user', content: 'Tell me a story.' }], max_tokens: 16,
    temperature: 0,
  });
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.ok(r.choices[0].message.content.length > 0);
  assert.ok(r.usage.prompt_tokens > 5);
  const stream = await client.chat.completions.create({
    model: 'x', messages: [{ role: 'user', content: 'Tell me a story.' }], max_tokens: 16,
    temperature: 0, stream: true,
  });
  let content = '';
  let role = null;
  let finish = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    const d = chunk.choices[0].delta;
    if (d.role) role = d.role;
    if (d.content) content += d.content;
    if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
  }
  assert.equal(role, 'assistant');
  assert.equal(content, r.choices[0].message.content);
  assert.equal(finish, 'length');
});

test('n = 2 returns two choices with their own indices', async () => {
  const r = await client.completions.create({
    model: 'x', prompt: 'Once upon a time', max_tokens: 12, temperature: 1.0, seed: 11, n: 2,
  });
  assert.equal(r.choices.length, 2);
  assert.deepEqual(r.choices.map((c) => c.index).sort(), [0, 1]);
  assert.equal(r.usage.completion_tokens, 24);
});

test('stop strings cut the text and finish with "stop"', async () => {
  const r = await client.completions.create({
    model: 'x', prompt: 'Once upon a time', max_tokens: 40, temperature: 0, stop: ['Lily'],
  });
  assert.equal(r.choices[0].text, ', there was a little girl named ');
  assert.equal(r.choices[0].finish_reason, 'stop');
  const s = await client.completions.create({
    model: 'x', prompt: 'Once upon a time', max_tokens: 40, temperature: 0, stop: 'girl',
    stream: true,
  });
  let text = '';
  for await (const c of s) text += c.choices[0].text;
  assert.equal(text, ', there was a little ');
});

test('max_tokens bounds the completion', async () => {
  for (const n of [1, 7]) {
    const r = await client.completions.create({
      model: 'x', prompt: 'Once upon a time', max_tokens: n, temperature: 0,
    });
    assert.equal(r.usage.completion_tokens, n);
    assert.equal(r.choices[0].finish_reason, 'length');
  }
});

test('logprobs: completions and chat formats', async () => {
  const r = await client.completions.create({
    model: 'x', prompt: 'Once upon a time', max_tokens: 5, temperature: 0, logprobs: 2,
  });
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.length, 5);
  assert.equal(lp.token_logprobs.length, 5);
  assert.equal(lp.top_logprobs.length, 5);
  assert.equal(lp.tokens.join(''), r.choices[0].text);
  for (let i = 0; i < 5; i++) {
    assert.ok(lp.token_logprobs[i] <= 0);
    const top = Object.values(lp.top_logprobs[i]);
    assert.ok(top.length >= 1 && top.length <= 2);
    // Greedy: the chosen token is the most likely one.
    assert.ok(Math.abs(Math.max(...top) - lp.token_logprobs[i]) < 1e-6);
  }
  const c = await client.chat.completions.create({
    model: 'x', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4, temperature: 0,
    logprobs: true, top_logprobs: 3,
  });
  const content = c.choices[0].logprobs.content;
  assert.equal(content.length, 4);
  for (const t of content) {
    assert.equal(typeof t.token, 'string');
    assert.ok(t.logprob <= 0);
    assert.ok(Array.isArray(t.bytes));
    assert.equal(t.top_logprobs.length, 3);
    assert.ok(t.top_logprobs[0].logprob >= t.top_logprobs[2].logprob);
  }
});

test('seed: same seed, same text; another seed, another text', async () => {
  const ask = (seed) => client.completions.create({
    model: 'x', prompt: 'Once upon a time', max_tokens: 40, temperature: 1.0, seed,
  });
  const [a, b, c] = await Promise.all([ask(7), ask(7), ask(8)]);
  assert.equal(a.choices[0].text, b.choices[0].text);
  assert.notEqual(a.choices[0].text, c.choices[0].text);
});

test('predicted outputs: the same text, the prediction tokens accepted; a wrong one only rejected', async () => {
  const ask = (prediction) => client.chat.completions.create({
    model: 'x', messages: [{ role: 'user', content: 'Tell me a story' }], max_tokens: 48,
    temperature: 0, ...(prediction === undefined ? {} : { prediction }),
  });
  const plain = await ask();
  const text = plain.choices[0].message.content;
  assert.equal(plain.usage.completion_tokens_details.accepted_prediction_tokens, 0);
  const right = await ask({ type: 'content', content: text });
  assert.equal(right.choices[0].message.content, text);
  const d = right.usage.completion_tokens_details;
  // The prediction's tokens line up with the output's: with 8 drafts a step (the server runs
  // --spec fixed:8), every token after the first but the steps' last is an accepted draft.
  assert.ok(d.accepted_prediction_tokens >= (right.usage.completion_tokens - 1) * 0.8 &&
    d.rejected_prediction_tokens === 0, JSON.stringify(d));
  const parts = await ask({ type: 'content', content: [{ type: 'text', text: 'The dog ran. ' },
    { type: 'text', text: 'The end.' }] });
  assert.equal(parts.choices[0].message.content, text);
  // The accepted drafts by position and the draft lengths are on /metrics (vLLM's names).
  const metrics = await (await fetch(`${process.env.SPINDLE_URL}/metrics`, {
    headers: { Authorization: `Bearer ${apiKey}` },
  })).text();
  const value = (name) => {
    const line = metrics.split('\n').find((l) => l.startsWith(`${name} `));
    assert.ok(line, `${name} missing from /metrics`);
    return Number(line.slice(name.length + 1));
  };
  const pos0 = value('spindle_spec_decode_num_accepted_tokens_per_pos_total{position="0"}');
  assert.ok(pos0 > 0 && pos0 >= value('spindle_spec_decode_num_accepted_tokens_per_pos_total{position="1"}'));
  assert.ok(value('spindle_spec_decode_draft_length_count') > 0);
  assert.ok(value('spindle_spec_decode_draft_length_sum') >= value('spindle_spec_decode_num_draft_tokens_total'));
  await assert.rejects(
    ask({ type: 'content', content: 42 }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'prediction',
  );
  await assert.rejects(
    ask({ type: 'text', content: 'x' }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'prediction',
  );
});

test('structured output: JSON mode gives a JSON object, a GBNF grammar one of its sentences, streamed or not', async () => {
  const chat = (extra) => client.chat.completions.create({
    model: 'x', messages: [{ role: 'user', content: 'Tell me a story' }], max_tokens: 200,
    temperature: 0, ...extra,
  });
  const json = await chat({ response_format: { type: 'json_object' } });
  const c = json.choices[0];
  if (c.finish_reason === 'stop') {
    const v = JSON.parse(c.message.content);
    assert.equal(typeof v, 'object');
    assert.ok(v !== null && !Array.isArray(v));
  } else {
    assert.equal(c.finish_reason, 'length');
  }
  assert.ok(c.message.content.trimStart().startsWith('{'), c.message.content);
  // The same request streamed: the same text.
  const stream = await chat({ response_format: { type: 'json_object' }, stream: true });
  let streamed = '';
  for await (const chunk of stream) streamed += chunk.choices[0]?.delta?.content ?? '';
  assert.equal(streamed, c.message.content);
  // A JSON schema (response_format json_schema, strict): the output parses and has its shape.
  const schema = {
    type: 'object',
    properties: {
      title: { type: 'string', maxLength: 20 },
      rating: { type: 'integer', minimum: 1, maximum: 5 },
      genre: { enum: ['fable', 'tale', 'myth'] },
    },
    required: ['title', 'rating', 'genre'],
    additionalProperties: false,
  };
  const structured = await chat({
    temperature: 1, seed: 7,
    response_format: { type: 'json_schema', json_schema: { name: 'story', schema, strict: true } },
  });
  assert.equal(structured.choices[0].finish_reason, 'stop');
  const story = JSON.parse(structured.choices[0].message.content);
  assert.deepEqual(Object.keys(story), ['title', 'rating', 'genre']);
  assert.ok(story.title.length <= 20 && story.rating >= 1 && story.rating <= 5);
  assert.ok(['fable', 'tale', 'myth'].includes(story.genre));
  await assert.rejects(
    chat({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', not: {} } } } }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'response_format' && /'not'/.test(e.message),
  );
  // A grammar (llama.cpp's field), on completions, sampled with seeds.
  const grammar = 'root ::= ("yes" | "no" | "maybe " [0-9]) "."\n';
  for (const seed of [1, 2, 3, 4]) {
    const r = await client.completions.create({
      model: 'x', prompt: 'Once upon a time', max_tokens: 16, temperature: 1, seed, grammar,
    });
    assert.match(r.choices[0].text, /^(yes|no|maybe [0-9])\.$/);
    assert.equal(r.choices[0].finish_reason, 'stop');
  }
  // A bad grammar: 400 naming the parameter and where the error is.
  await assert.rejects(
    client.completions.create({ model: 'x', prompt: 'Hi', grammar: 'root ::= "a" | foo\n' }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'grammar' &&
      /'foo' is used but not defined/.test(e.message),
  );
  await assert.rejects(
    client.completions.create({ model: 'x', prompt: 'Hi', grammar: 'root ::= "a\n' }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'grammar' && /at byte 9/.test(e.message),
  );
  await assert.rejects(
    chat({ response_format: { type: 'xml' } }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'response_format',
  );
});

test('tool calls: required and named tool_choice force a call with valid arguments, streamed or not; none gives text', async () => {
  const tools = [
    { type: 'function', function: { name: 'get_weather', description: 'Weather in a city',
      parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 16 },
        days: { type: 'integer', minimum: 1, maximum: 7 } }, required: ['city', 'days'] } } },
    { type: 'function', function: { name: 'get_time', parameters: { type: 'object', properties: {} } } },
  ];
  const ask = (extra) => client.chat.completions.create({
    model: 'x', messages: [{ role: 'user', content: 'What is the weather in Paris?' }],
    max_tokens: 200, temperature: 1, seed: 3, tools, ...extra,
  });
  const req = await ask({ tool_choice: 'required' });
  const c = req.choices[0];
  assert.equal(c.finish_reason, 'tool_calls');
  assert.equal(c.message.tool_calls.length, 1);
  const call = c.message.tool_calls[0];
  assert.equal(call.type, 'function');
  assert.match(call.id, /^call_/);
  assert.ok(['get_weather', 'get_time'].includes(call.function.name));
  const args = JSON.parse(call.function.arguments);
  if (call.function.name === 'get_weather') {
    assert.equal(typeof args.city, 'string');
    assert.ok(Number.isInteger(args.days) && args.days >= 1 && args.days <= 7);
  }
  const named = await ask({ tool_choice: { type: 'function', function: { name: 'get_weather' } } });
  assert.equal(named.choices[0].message.tool_calls[0].function.name, 'get_weather');
  // Streamed through the SDK's helper, which adds up the tool_calls deltas: the same call, its
  // arguments in several deltas.
  const fragments = [];
  const runner = client.chat.completions.stream({
    model: 'x', messages: [{ role: 'user', content: 'What is the weather in Paris?' }],
    max_tokens: 200, temperature: 1, seed: 3, tools,
    tool_choice: { type: 'function', function: { name: 'get_weather' } },
  });
  runner.on('tool_calls.function.arguments.delta', (e) => {
    if (e.arguments_delta) fragments.push(e.arguments_delta);
  });
  const streamed = (await runner.finalChatCompletion()).choices[0];
  assert.equal(streamed.finish_reason, 'tool_calls');
  const shape = (calls) => calls.map((t) => [t.type, t.function.name, t.function.arguments]);
  assert.deepEqual(shape(streamed.message.tool_calls), shape(named.choices[0].message.tool_calls));
  assert.match(streamed.message.tool_calls[0].id, /^call_/);
  assert.ok(fragments.length >= 3, `${fragments.length} argument deltas`);
  assert.equal(fragments.join(''), named.choices[0].message.tool_calls[0].function.arguments);
  const none = await ask({ tool_choice: 'none', temperature: 0 });
  assert.equal(none.choices[0].message.tool_calls, undefined);
  assert.notEqual(none.choices[0].finish_reason, 'tool_calls');
  await assert.rejects(
    ask({ tool_choice: { type: 'function', function: { name: 'nope' } } }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'tool_choice',
  );
  await assert.rejects(
    ask({ tools: [{ type: 'function', function: {} }] }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'tools',
  );
});

test('tool calls: content, then parallel calls, streamed in deltas that add up', async () => {
  const tools = [{ type: 'function', function: { name: 'get_weather', parameters: {
    type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];
  // A grammar makes the model say something first, then call the tool twice.
  const call = '"<tool_call>\\n{\\"name\\": \\"get_weather\\", \\"arguments\\": {\\"city\\": ' +
    '\\"" [a-z]{2,8} "\\"}}\\n</tool_call>"';
  const body = {
    model: 'x', messages: [{ role: 'user', content: 'Weather in Paris and Rome?' }],
    max_tokens: 200, temperature: 1, seed: 5, tools,
    grammar: `root ::= "Checking both." "\\n" call "\\n" call\ncall ::= ${call}\n`,
  };
  const whole = await client.chat.completions.create(body);
  const w = whole.choices[0];
  assert.equal(w.finish_reason, 'tool_calls');
  assert.equal(w.message.content, 'Checking both.');
  assert.equal(w.message.tool_calls.length, 2);
  const runner = client.chat.completions.stream(body);
  const content = [];
  const fragments = [0, 0];
  runner.on('content.delta', (e) => content.push(e.delta));
  runner.on('tool_calls.function.arguments.delta', (e) => {
    if (e.arguments_delta) fragments[e.index]++;
  });
  const s = (await runner.finalChatCompletion()).choices[0];
  assert.equal(s.finish_reason, 'tool_calls');
  assert.equal(s.message.content, w.message.content);
  // The newline and the marker after the content were held back, never streamed as content.
  assert.ok(content.every((d) => !d.includes('<') && !d.includes('\n')), JSON.stringify(content));
  const shape = (calls) => calls.map((t) => [t.function.name, t.function.arguments]);
  assert.deepEqual(shape(s.message.tool_calls), shape(w.message.tool_calls));
  assert.notEqual(s.message.tool_calls[0].id, s.message.tool_calls[1].id);
  assert.ok(fragments[0] >= 2 && fragments[1] >= 2, JSON.stringify(fragments));
});

test('errors arrive as the SDK error classes with OpenAI shapes', async () => {
  await assert.rejects(
    client.completions.create({ model: 'x', prompt: 'Hi', temperature: 5 }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && e.param === 'temperature',
  );
  await assert.rejects(
    client.chat.completions.create({ model: 'x', messages: [] }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'messages',
  );
  await assert.rejects(
    client.completions.create({ model: 'x', prompt: 'word '.repeat(3000), max_tokens: 5 }),
    (e) => e instanceof OpenAI.BadRequestError && e.code === 'context_length_exceeded',
  );
  const wrongKey = new OpenAI({ baseURL, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(
    wrongKey.completions.create({ model: 'x', prompt: 'Hi' }),
    (e) => e instanceof OpenAI.AuthenticationError && e.status === 401,
  );
  await assert.rejects(
    client.get('/nowhere'),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404,
  );
});
