// The Batch API through the official OpenAI SDK, against the server test_openai.sh starts:
// upload an input file, create a batch, poll it, download and check the output.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI, { toFile } from 'openai';

const client = new OpenAI({
  baseURL: `${process.env.SPINDLE_URL}/v1`, apiKey: process.env.SPINDLE_KEY, maxRetries: 0,
  timeout: 60000,
});

test('batches: upload, create, poll, download the output', async () => {
  const lines = [];
  for (let i = 0; i < 6; i++) {
    lines.push(JSON.stringify({
      custom_id: `line-${i}`, method: 'POST', url: '/v1/chat/completions',
      body: {
        model: 'stories260K.gguf', max_tokens: 8, temperature: 0,
        messages: [{ role: 'system', content: 'You tell stories.' },
          { role: 'user', content: `Story number ${i}` }],
      },
    }));
  }
  const file = await client.files.create({
    file: await toFile(Buffer.from(lines.join('\n') + '\n'), 'input.jsonl'), purpose: 'batch',
  });
  assert.match(file.id, /^file-/);
  assert.equal(file.purpose, 'batch');
  assert.equal(file.filename, 'input.jsonl');
  let batch = await client.batches.create({
    input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h',
    metadata: { suite: 'sdk' },
  });
  assert.match(batch.id, /^batch_/);
  assert.deepEqual(batch.metadata, { suite: 'sdk' });
  const deadline = Date.now() + 60000;
  while (!['completed', 'failed', 'cancelled', 'expired'].includes(batch.status)) {
    assert.ok(Date.now() < deadline, `batch still ${batch.status}`);
    await new Promise((r) => setTimeout(r, 50));
    batch = await client.batches.retrieve(batch.id);
  }
  assert.equal(batch.status, 'completed');
  assert.deepEqual(batch.request_counts, { total: 6, completed: 6, failed: 0 });
  const listed = await client.batches.list({ limit: 5 });
  assert.ok(listed.data.some((b) => b.id === batch.id));
  const content = await client.files.content(batch.output_file_id);
  const out = (await content.text()).trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(out.map((r) => r.custom_id).sort(), lines.map((_, i) => `line-${i}`).sort());
  for (const r of out) {
    assert.equal(r.response.status_code, 200);
    assert.equal(r.response.body.object, 'chat.completion');
    assert.equal(r.response.body.usage.completion_tokens, 8);
  }
  const deleted = await client.files.delete(file.id);
  assert.equal(deleted.deleted, true);
});
