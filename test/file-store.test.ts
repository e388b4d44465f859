import t from 'tap'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FileStore } from '../lib/index.js'
import { storeContract } from './store-contract.js'

const directory = await mkdtemp(join(tmpdir(), 'fastify-tus-contract-'))
const store = new FileStore({ directory })
t.teardown(async () => {
  await store.close()
  await rm(directory, { recursive: true, force: true })
})
storeContract(t, store)

t.test('the contract holds with fsync: false', async (t) => {
  const unsynced = new FileStore({ directory: join(directory, 'no-fsync'), fsync: false })
  t.teardown(async () => { await unsynced.close() })
  storeContract(t, unsynced)
})
