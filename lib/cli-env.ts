/**
 * Every CLI flag also as an environment variable (containers, systemd units): `--max-size 10G` is
 * `FASTIFY_TUS_MAX_SIZE=10G`, `--no-fsync` is `FASTIFY_TUS_NO_FSYNC=1`, a repeatable flag takes a comma-separated
 * list (`FASTIFY_TUS_CORS_ORIGIN=https://a.example,https://b.example`). A flag on the command line wins over its
 * variable.
 */

import { nearestName } from './known-keys.js'

export interface CliOptionSpec {
  type: 'string' | 'boolean'
  multiple?: boolean
}

const PREFIX = 'FASTIFY_TUS_'
const NOT_FROM_ENV = new Set(['help', 'version'])

const SIZE_UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }

/**
 * A size flag's bytes: a positive whole number, or with a binary suffix (`8M` and `8MiB` are 8 MiB). `8MB` is
 * refused, not guessed: many read it as 8,000,000 bytes. `usage` makes the error (the CLI's: exit code 2).
 */
export function parseSize (flag: string, value: string, usage: (message: string) => Error): number {
  const match = /^(\d+)(?:([KMGT])(?:iB)?)?$/i.exec(value.trim())
  const size = match === null ? NaN : Number(match[1]) * SIZE_UNITS[(match[2] ?? '').toUpperCase()]!
  if (!(Number.isSafeInteger(size) && size > 0)) {
    throw usage(`${flag} must be a positive number of bytes, optionally with K, M, G or T (KiB, MiB, GiB, TiB; got "${value}")`)
  }
  return size
}

/** The environment variable of a flag: `max-size` -> `FASTIFY_TUS_MAX_SIZE`. */
export function envName (flag: string): string {
  return PREFIX + flag.toUpperCase().replaceAll('-', '_')
}

/**
 * The variables named like ours that are none of ours (`FASTIFY_TUS_MAXSIZE`): each a warning to log, since the
 * setting meant is off. Warned, not refused: scripts of this project and others may set their own under the prefix.
 */
export function unknownEnvVariables (options: Readonly<Record<string, CliOptionSpec>>, env: NodeJS.ProcessEnv): string[] {
  const known = Object.keys(options).filter((flag) => !NOT_FROM_ENV.has(flag)).map(envName)
  // Compared without the prefix they share, which would make any two names look alike.
  const suffixes = known.map((name) => name.slice(PREFIX.length))
  return Object.keys(env).filter((name) => name.startsWith(PREFIX) && !known.includes(name)).map((name) => {
    const near = nearestName(name.slice(PREFIX.length), suffixes)
    return `${name} is no variable of fastify-tus and is ignored${near === undefined ? '' : ` (did you mean ${PREFIX}${near}?)`}`
  })
}

/** The arguments the environment adds before `argv`'s own; throws on a boolean variable that is not one. */
export function envArguments (options: Readonly<Record<string, CliOptionSpec>>, env: NodeJS.ProcessEnv, argv: readonly string[]): string[] {
  const args: string[] = []
  for (const [flag, spec] of Object.entries(options)) {
    const value = env[envName(flag)]
    if (value === undefined || NOT_FROM_ENV.has(flag)) continue
    if (argv.some((arg) => arg === `--${flag}` || arg.startsWith(`--${flag}=`))) continue
    if (spec.type === 'boolean') {
      if (/^(1|true|yes|on)$/i.test(value)) args.push(`--${flag}`)
      else if (!/^(0|false|no|off|)$/i.test(value)) throw new TypeError(`${envName(flag)} must be 1/true/yes/on or 0/false/no/off (got "${value}")`)
      continue
    }
    // An empty variable is one not set, for every flag (a Docker image's default turned off with `-e NAME=`).
    if (value === '') continue
    const values = spec.multiple === true ? value.split(',').map((item) => item.trim()).filter((item) => item !== '') : [value]
    for (const item of values) args.push(`--${flag}=${item}`)
  }
  return args
}

/**
 * A message about flags with each flag that came from the environment (its variable is set, the command line does not
 * have it) named as that variable: the user who set FASTIFY_TUS_PORT=abc never typed --port.
 */
export function namingVariables (message: string, options: Readonly<Record<string, CliOptionSpec>>, env: NodeJS.ProcessEnv, argv: readonly string[]): string {
  return message.replace(/--([a-z][a-z0-9-]*)/g, (written, flag: string) => {
    if (!Object.hasOwn(options, flag) || NOT_FROM_ENV.has(flag) || env[envName(flag)] === undefined) return written
    if (argv.some((arg) => arg === written || arg.startsWith(`${written}=`))) return written
    return envName(flag)
  })
}
