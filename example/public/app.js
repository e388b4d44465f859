// The upload page: Uppy's Dashboard uploading with tus to /files/, and the list of finished uploads
// from GET /api/uploads, refreshed after each upload. `?chunkSize=<bytes>` splits uploads into PATCH
// requests of that size (the default is one request per upload, resumed from the server's offset).
import { Dashboard, Tus, Uppy } from '/vendor/uppy/uppy.min.mjs'

const params = new URLSearchParams(location.search)
const chunkSize = Number(params.get('chunkSize'))

const uppy = new Uppy({ autoProceed: false })
  .use(Dashboard, {
    target: '#dashboard',
    inline: true,
    height: 420,
    width: '100%',
    showProgressDetails: true,
    proudlyDisplayPoweredByUppy: false
  })
  .use(Tus, {
    endpoint: new URL('/files/', location.href).href,
    // Retried with these delays (ms) after a failed request, from the offset the server reports.
    retryDelays: [0, 1000, 3000, 5000, 10000],
    // A file uploaded twice is two uploads; an interrupted one is still resumed (fingerprint kept until success).
    removeFingerprintOnSuccess: true,
    ...(Number.isSafeInteger(chunkSize) && chunkSize > 0 ? { chunkSize } : {})
  })

// For the end-to-end test and for poking at from the console.
window.uppy = uppy

const table = document.querySelector('#uploads')
const empty = document.querySelector('#uploads-empty')

function humanSize (bytes) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit++ }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`
}

async function refreshUploads () {
  const response = await fetch('/api/uploads', { cache: 'no-store' })
  if (!response.ok) throw new Error(`GET /api/uploads answered ${response.status}`)
  const uploads = await response.json()
  const rows = uploads.map((upload) => {
    const row = document.createElement('tr')
    row.dataset.id = upload.id
    const name = document.createElement('td')
    const link = document.createElement('a')
    link.href = upload.url
    link.download = upload.name
    link.textContent = upload.name
    name.append(link)
    const size = document.createElement('td')
    size.className = 'size'
    size.textContent = humanSize(upload.size)
    size.title = `${upload.size} bytes`
    const finished = document.createElement('td')
    finished.textContent = new Date(upload.completedAt).toLocaleString()
    row.append(name, size, finished)
    return row
  })
  table.tBodies[0].replaceChildren(...rows)
  table.hidden = rows.length === 0
  empty.hidden = rows.length !== 0
}

function showListError (error) {
  uppy.info(`Could not load the finished uploads: ${error.message}`, 'error', 5000)
}

uppy.on('upload-success', () => { refreshUploads().catch(showListError) })
refreshUploads().catch(showListError)
