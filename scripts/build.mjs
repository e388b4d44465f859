// `npm run build` (also run by `prepare`, so `npm install` in a clone and `npm pack` build first):
// a clean dist/ (no file of a removed source survives into the package), tsc, and an executable CLI.
import { chmodSync, rmSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
rmSync(join(root, 'dist'), { recursive: true, force: true })
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')
const result = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' })
if (result.status !== 0) process.exit(result.status ?? 1)
// The package's bin: npm makes it executable when it installs the package, but not in this clone.
chmodSync(join(root, 'dist', 'cli.js'), 0o755)
