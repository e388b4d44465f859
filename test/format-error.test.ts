// formatError: the app chooses the body of every error answer, in both protocols; status and protocol headers stay.
// The draft's problem details reach the formatter with their type, and stay what the draft defines when it
// returns undefined for them.
import t from 'tap'
import { createUpload, rawRequest, startServer, tusRequest } from './helpers.js'
import type { FormatError, TusErrorAnswer } from '../lib/index.js'

const DRAFT = { 'Upload-Draft-Interop-Version': '6' }

/** JSON for every error but the draft's problem types (kept as the draft spells them). */
function jsonErrors (seen: TusErrorAnswer[]): FormatError {
  return (error, request, answer) => {
    seen.push(answer)
    if (answer.problemType !== undefined) return undefined
    return {
      contentType: 'application/json; charset=utf-8',
      body: JSON.stringify({ error: { code: error.code, message: answer.message, status: answer.status, protocol: answer.protocol, url: request.url } })
    }
  }
}

t.test('tus: an unknown upload is a JSON 404 with the tus headers', async (t) => {
  const seen: TusErrorAnswer[] = []
  const server = await startServer(t, { formatError: jsonErrors(seen) })
  const response = await tusRequest(`${server.endpoint}nope`, { method: 'HEAD' })
  t.equal(response.status, 404)
  t.equal(response.headers['tus-resumable'], '1.0.0')
  const patch = await tusRequest(`${server.endpoint}nope`, {
    method: 'PATCH', headers: { 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' }, body: 'hello'
  })
  t.equal(patch.status, 404)
  t.match(patch.headers['content-type'], /^application\/json/)
  t.same(JSON.parse(patch.text), { error: { code: 'FST_TUS_NOT_FOUND', message: seen[1]!.message, status: 404, protocol: 'tus', url: '/files/nope' } })
  t.equal(seen[1]!.contentType, 'text/plain; charset=utf-8')
})

t.test('tus: an offset mismatch keeps Upload-Offset and its 409, with the app body', async (t) => {
  const server = await startServer(t, { formatError: jsonErrors([]) })
  const url = await createUpload(server)
  const response = await tusRequest(url, {
    method: 'PATCH', headers: { 'Upload-Offset': '3', 'Content-Type': 'application/offset+octet-stream' }, body: 'hello'
  })
  t.equal(response.status, 409)
  t.equal(response.headers['upload-offset'], '0')
  t.equal(response.headers['tus-resumable'], '1.0.0')
  t.equal(JSON.parse(response.text).error.code, 'FST_TUS_OFFSET_MISMATCH')
})

t.test('tus: a missing Tus-Resumable (412) goes through the formatter too', async (t) => {
  const server = await startServer(t, { formatError: jsonErrors([]) })
  const response = await rawRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '5' } })
  t.equal(response.status, 412)
  t.equal(response.headers['tus-version'], '1.0.0')
  t.equal(JSON.parse(response.text).error.status, 412)
})

t.test('draft: a plain error gets the app body; a problem type stays problem+json when the formatter keeps it', async (t) => {
  const seen: TusErrorAnswer[] = []
  const server = await startServer(t, { formatError: jsonErrors(seen) })
  const missing = await rawRequest(`${server.endpoint}nope`, { method: 'HEAD', headers: DRAFT })
  t.equal(missing.status, 404)
  t.equal(missing.headers['upload-draft-interop-version'], '6')
  t.notOk(missing.headers['tus-resumable'])
  t.equal(seen[0]!.protocol, 'ietf-draft')
  const gone = await rawRequest(`${server.endpoint}nope`, { method: 'DELETE', headers: DRAFT })
  t.equal(gone.status, 404)
  t.same(JSON.parse(gone.text).error, { code: 'FST_TUS_NOT_FOUND', message: seen[1]!.message, status: 404, protocol: 'ietf-draft', url: '/files/nope' })

  const created = await rawRequest(server.endpoint, { method: 'POST', headers: { ...DRAFT, 'Upload-Complete': '?0' }, body: 'abc' })
  t.equal(created.status, 201)
  const url = new URL(created.headers.location!, server.origin).href
  const mismatch = await rawRequest(url, { method: 'PATCH', headers: { ...DRAFT, 'Upload-Offset': '1', 'Upload-Complete': '?1', 'Content-Type': 'application/partial-upload' }, body: 'def' })
  t.equal(mismatch.status, 409)
  t.equal(mismatch.headers['content-type'], 'application/problem+json')
  t.equal(mismatch.headers['upload-offset'], '3')
  const problem = JSON.parse(mismatch.text)
  t.equal(problem.type, 'https://iana.org/assignments/http-problem-types#mismatching-upload-offset')
  t.equal(problem['expected-offset'], 3)
  t.equal(problem['provided-offset'], 1)
  t.equal(seen.at(-1)!.problemType, problem.type)
})

t.test('draft: a formatter may replace a problem type too; one that throws leaves the default body', async (t) => {
  let calls = 0
  const server = await startServer(t, {
    formatError: (error, _request, answer) => {
      calls++
      if (answer.problemType === undefined) throw new Error('formatter bug')
      return { contentType: 'application/json', body: Buffer.from(JSON.stringify({ kind: answer.problemType, code: error.code })) }
    }
  })
  const created = await rawRequest(server.endpoint, { method: 'POST', headers: { ...DRAFT, 'Upload-Complete': '?0' }, body: 'abc' })
  const url = new URL(created.headers.location!, server.origin).href
  const mismatch = await rawRequest(url, { method: 'PATCH', headers: { ...DRAFT, 'Upload-Offset': '0', 'Upload-Complete': '?1', 'Content-Type': 'application/partial-upload' }, body: 'def' })
  t.equal(mismatch.status, 409)
  t.equal(mismatch.headers['content-type'], 'application/json')
  t.same(JSON.parse(mismatch.text), { kind: 'https://iana.org/assignments/http-problem-types#mismatching-upload-offset', code: 'FST_TUS_OFFSET_MISMATCH' })
  const missing = await rawRequest(`${server.endpoint}nope`, { method: 'DELETE', headers: DRAFT })
  t.equal(missing.status, 404)
  t.equal(missing.headers['content-type'], 'text/plain; charset=utf-8')
  t.ok(missing.text.length > 0)
  t.equal(calls, 2)
})

t.test('formatError must be a function', async (t) => {
  // @ts-expect-error a string is no formatter
  await t.rejects(startServer(t, { formatError: 'json' }), /formatError/)
})

t.test('a hook\'s code-less refusal reaches formatError with the string code it is typed with, HTTP_<status> (tus and draft)', async (t) => {
  const codes: unknown[] = []
  // A formatter that relies on the types: `error.code` is a string.
  const formatError: FormatError = (error, _request, answer) => {
    codes.push(error.code)
    return { contentType: 'application/json', body: JSON.stringify({ code: error.code.toLowerCase(), message: answer.message, status: answer.status }) }
  }
  const refusal = (message: string, statusCode: number): Error => Object.assign(new Error(message), { statusCode })
  const thrown = refusal('Log in first', 401)
  const server = await startServer(t, {
    formatError,
    auth: (request) => { if (request.headers.authorization === undefined) throw thrown },
    onUploadCreate: (upload) => { if (upload.metadata.big !== undefined) throw refusal('Not enough space left', 413) },
    onUploadAccess: (upload, action) => { if (action === 'terminate') throw refusal('Not yours', 403) }
  })
  const url = await createUpload(server, { 'Upload-Length': '5', Authorization: 'Bearer a' })
  const cases: Array<[string, string, Record<string, string>, number, string]> = [
    ['auth', server.endpoint, { 'Upload-Length': '5' }, 401, 'Log in first'],
    ['onUploadCreate', server.endpoint, { 'Upload-Length': '5', 'Upload-Metadata': 'big', Authorization: 'Bearer a' }, 413, 'Not enough space left'],
    ['onUploadAccess', url, { Authorization: 'Bearer a' }, 403, 'Not yours']
  ]
  for (const [protocol, extra] of [['tus', {}], ['draft', { 'Upload-Complete': '?0' }]] as const) {
    for (const [hook, target, headers, status, message] of cases) {
      const method = hook === 'onUploadAccess' ? 'DELETE' : 'POST'
      const response = protocol === 'tus'
        ? await tusRequest(target, { method, headers })
        : await rawRequest(target, { method, headers: { ...DRAFT, ...(method === 'POST' ? extra : {}), ...headers } })
      t.equal(response.status, status, `${protocol} ${hook}: status`)
      t.match(response.headers['content-type'], /^application\/json/, `${protocol} ${hook}: the app's format`)
      t.same(JSON.parse(response.text), { code: `http_${status}`, message, status }, `${protocol} ${hook}: its body`)
    }
  }
  t.same(codes, ['HTTP_401', 'HTTP_413', 'HTTP_403', 'HTTP_401', 'HTTP_413', 'HTTP_403'])
  t.equal((thrown as Error & { code?: unknown }).code, undefined, 'the error the hook threw is left as it was')
  t.equal((await tusRequest(url, { method: 'HEAD', headers: { Authorization: 'Bearer a' } })).status, 200, 'the upload is still there')
})

t.test('a formatError returning no { body, contentType } keeps the answer: its status, headers and the default body (tus and draft)', async (t) => {
  const returned: unknown[] = [123, 'oops', {}, { body: 5, contentType: 'text/plain' }, { body: { a: 1 }, contentType: 'application/json' }, { body: 'x' }, { body: 'x', contentType: 'text/plain\r\nX-Injected: 1' }]
  for (const value of returned) {
    const server = await startServer(t, { formatError: () => value as never })
    const url = await createUpload(server, { 'Upload-Length': '10' })
    const tus = await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '3', 'Content-Type': 'application/offset+octet-stream' }, body: 'abc' })
    t.equal(tus.status, 409, `tus, ${JSON.stringify(value)}: still the 409`)
    t.equal(tus.headers['upload-offset'], '0', 'with the offset to resume from')
    t.equal(tus.headers['content-type'], 'text/plain; charset=utf-8')
    t.match(tus.text, /^Upload-Offset mismatch|offset/i, `the default body (${tus.text})`)
    t.equal(tus.headers['x-injected'], undefined)
    const draft = await rawRequest(url, {
      method: 'PATCH',
      headers: { ...DRAFT, 'Upload-Offset': '3', 'Upload-Complete': '?0', 'Content-Type': 'application/partial-upload' },
      body: 'abc'
    })
    t.equal(draft.status, 409, `draft, ${JSON.stringify(value)}: still the 409`)
    t.equal(draft.headers['upload-offset'], '0')
    t.match(draft.headers['content-type'], /^application\/problem\+json/, 'the draft\'s problem details')
    t.match(JSON.parse(draft.text), { type: /mismatching-upload-offset/, 'expected-offset': 0, 'provided-offset': 3 })
    const missing = await tusRequest(`${server.endpoint}nope`, { method: 'HEAD' })
    t.equal(missing.status, 404, 'a 404 stays a 404')
  }
})
