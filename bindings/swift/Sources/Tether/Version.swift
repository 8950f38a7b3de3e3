import CTether

/// MAJOR.MINOR of include/tether.h as this module was compiled against it. Before 1.0 a
/// different MAJOR.MINOR of the loaded library means a different ABI (the header says so at
/// `tether_version_number`), and calling into it would be undefined behaviour, not an error.
let headerABI = (major: UInt32(TETHER_VERSION_MAJOR), minor: UInt32(TETHER_VERSION_MINOR))

/// Whether a library of `library` MAJOR.MINOR serves code built against `header`: before 1.0
/// a minor release may change the ABI, so both must match; from 1.0 on a newer minor release
/// only adds, so the library's minor may be higher.
func compatible(library: (major: UInt32, minor: UInt32), header: (major: UInt32, minor: UInt32)) -> Bool {
    guard library.major == header.major else { return false }
    return header.major == 0 ? library.minor == header.minor : library.minor >= header.minor
}

/// Throws `.incompatibleLibrary` unless `number` (`tether_version_number()` encoding) is
/// `compatible` with the header; PATCH may differ.
func checkLibraryVersion(number: UInt32, text: String) throws {
    let major = (number >> 16) & 0xff
    let minor = (number >> 8) & 0xff
    if !compatible(library: (major, minor), header: headerABI) {
        throw TetherError.incompatibleLibrary(
            "libtether \(text) (ABI \(major).\(minor)) is loaded, but this Swift binding was built "
                + "against tether.h \(headerABI.major).\(headerABI.minor); link the libtether "
                + "built from the same checkout as the Swift package")
    }
}

/// Checked once, at the first client: a global is initialised lazily and exactly once.
let libraryIncompatibility: TetherError? = {
    do {
        try checkLibraryVersion(number: tether_version_number(), text: String(cString: tether_version()))
        return nil
    } catch let e as TetherError {
        return e
    } catch {
        return .unknown(0, "\(error)")
    }
}()
