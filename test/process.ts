// Child processes for the CLI and example-server tests: spawn, wait for the line announcing the URL,
// collect the output, and await the exit.
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'

export interface Exit { code: number | null, signal: NodeJS.Signals | null }

export interface RunningProcess {
  child: ChildProcess
  stdout: () => string
  stderr: () => string
  /** Resolves when the process has exited (never rejects). */
  exited: Promise<Exit>
}

interface Teardown { teardown: (fn: () => unknown) => void }

/**
 * The environment of every child process of the tests: this one's without the CLI's variables (FASTIFY_TUS_*: a
 * FASTIFY_TUS_PORT or FASTIFY_TUS_DIR of the shell that runs the suite would configure the servers under test, and the
 * CLI warns of the names it does not know) and without npm's (a child npm must not inherit the npm_* settings of an
 * `npm test` around us: prefix, package, script...).
 */
export const childEnv: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^(npm_|FASTIFY_TUS_)/i.test(name)))

/** Spawns a process; killed at teardown if it is still running. */
export function startProcess (
  t: Teardown, command: string, args: string[], options: { env?: NodeJS.ProcessEnv, cwd?: string, group?: boolean } = {}
): RunningProcess {
  // group: the process leads a process group that teardown kills whole (npx runs the CLI as its child).
  const child = spawn(command, args, { env: { ...childEnv, ...options.env }, cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: options.group === true })
  let out = ''
  let err = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => { out += chunk })
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => { err += chunk })
  const exited = once(child, 'close').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }))
  t.teardown(async () => {
    if (options.group === true && child.pid !== undefined) {
      try { process.kill(-child.pid, 'SIGKILL') } catch {}
    } else if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await exited
  })
  return { child, stdout: () => out, stderr: () => err, exited }
}

/** Runs a process to its end. */
export async function runProcess (
  t: Teardown, command: string, args: string[], options: { env?: NodeJS.ProcessEnv, cwd?: string } = {}
): Promise<Exit & { stdout: string, stderr: string }> {
  const running = startProcess(t, command, args, options)
  const exit = await running.exited
  return { ...exit, stdout: running.stdout(), stderr: running.stderr() }
}

/** Resolves with the first match of `pattern` in the process's stdout; rejects if it exits first. */
export async function waitForOutput (running: RunningProcess, pattern: RegExp): Promise<RegExpMatchArray> {
  return await new Promise((resolve, reject) => {
    const check = (): void => {
      const match = running.stdout().match(pattern)
      if (match === null) return
      running.child.stdout?.off('data', check)
      resolve(match)
    }
    running.child.stdout?.on('data', check)
    check()
    void running.exited.then((exit) => {
      reject(new Error(`exited (${exit.code ?? exit.signal}) before printing ${pattern}\nstdout: ${running.stdout()}\nstderr: ${running.stderr()}`))
    })
  })
}

const root = join(import.meta.dirname, '..')

/**
 * The CLI's path, `dist/cli.js`, built first if any source in lib/ is newer: `npm test` builds dist/, but a lone
 * `npx tap` after editing lib/ would otherwise test stale code.
 */
export async function builtCli (): Promise<string> {
  const cli = join(root, 'dist', 'cli.js')
  const newestSource = Math.max(...readdirSync(join(root, 'lib'), { recursive: true, encoding: 'utf8' })
    .filter((name) => name.endsWith('.ts'))
    .map((name) => statSync(join(root, 'lib', name)).mtimeMs))
  if (existsSync(cli) && statSync(cli).mtimeMs >= newestSource) return cli
  await promisify(execFile)(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], { cwd: root })
  return cli
}
