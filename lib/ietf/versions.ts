/**
 * The interop versions of draft-ietf-httpbis-resumable-upload this server knows, and what differs between
 * them on the wire. A draft client names its version in `Upload-Draft-Interop-Version` on every request;
 * the plugin accepts the versions listed in the `ietfDraftVersions` option (all of these by default).
 * Sources: https://datatracker.ietf.org/doc/draft-ietf-httpbis-resumable-upload/ (-01 to -12, and the editor's copy).
 */
export interface DraftVersion {
  /** The `Upload-Draft-Interop-Version` value. */
  interop: DraftInteropVersion
  /** The draft revisions that use it, for messages and docs. */
  drafts: string
  /**
   * -01 says `Upload-Incomplete` (`?1` = not complete); -02 on say `Upload-Complete` (`?1` = complete).
   * Requests are read and responses written with this header.
   */
  completeHeader: 'Upload-Incomplete' | 'Upload-Complete'
  /** From -04 (interop 6) appends must be `Content-Type: application/partial-upload`; before, any type. */
  appendNeedsPartialUploadType: boolean
  /**
   * From -04 on an append with a body must say whether it completes the upload (else 400); before, and on an empty
   * append in every version (tus-js-client's last PATCH of a deferred-length stream carries none), a missing
   * header means "not complete".
   */
  appendNeedsComplete: boolean
  /** From -03 (interop 5) a 104 may repeat to report progress (`Upload-Offset`). */
  progressInterim: boolean
  /**
   * `Upload-Limit` (-04 on): absent before; the retention key is `expires` in -04/-05 and `max-age` from
   * -06. Both mean seconds of life left.
   */
  uploadLimit: 'none' | 'expires' | 'max-age'
  /** Problem types (RFC 9457 bodies) defined by this version: -04 on. */
  problemTypes: boolean
  /** `completed-upload` problem type for appends to a finished upload: -04 to -11 (removed in -12). */
  completedUploadProblem: boolean
  /** GET on the upload resource is offset retrieval too (the editor's copy of -12, still interop 8, and -12). */
  getRetrievesOffset: boolean
  /**
   * -01 to -05: offset retrieval (HEAD) must carry no `Upload-Offset`, complete flag or `Upload-Length`, and
   * cancellation (DELETE) no `Upload-Offset` or complete flag, else 400. -06 dropped both rules: from interop 7
   * such headers are no reason to refuse the request.
   */
  refusesStateHeaders: boolean
}

/** An `Upload-Draft-Interop-Version` this server knows (`ietfDraftVersions`). */
export type DraftInteropVersion = 3 | 4 | 5 | 6 | 7 | 8 | 9

const v = (interop: DraftInteropVersion, drafts: string, rules: Omit<DraftVersion, 'interop' | 'drafts'>): DraftVersion => ({ ...rules, interop, drafts })

const V3 = v(3, '-01', {
  completeHeader: 'Upload-Incomplete',
  appendNeedsPartialUploadType: false,
  appendNeedsComplete: false,
  progressInterim: false,
  uploadLimit: 'none',
  problemTypes: false,
  completedUploadProblem: false,
  getRetrievesOffset: false,
  refusesStateHeaders: true
})
const V4 = v(4, '-02', { ...V3, completeHeader: 'Upload-Complete' })
const V5 = v(5, '-03', { ...V4, progressInterim: true })
const V6 = v(6, '-04, -05', {
  ...V5,
  appendNeedsPartialUploadType: true,
  appendNeedsComplete: true,
  uploadLimit: 'expires',
  problemTypes: true,
  completedUploadProblem: true
})
const V7 = v(7, '-06 to -08', { ...V6, uploadLimit: 'max-age', refusesStateHeaders: false })
// The latest editor's text, still at interop 8, describes GET on the upload resource as offset retrieval.
const V8 = v(8, '-09 to -11', { ...V7, getRetrievesOffset: true })
const V9 = v(9, '-12', { ...V8, completedUploadProblem: false })

const KNOWN = [V3, V4, V5, V6, V7, V8, V9]

/** Every interop version with known rules, by number (any number a request names looks itself up). */
export const DRAFT_VERSIONS: ReadonlyMap<number, DraftVersion> = new Map(KNOWN.map((version) => [version.interop, version]))

/** The default of `ietfDraftVersions`: every version whose rules are known. */
export const DEFAULT_DRAFT_VERSIONS: readonly DraftInteropVersion[] = KNOWN.map((version) => version.interop)
