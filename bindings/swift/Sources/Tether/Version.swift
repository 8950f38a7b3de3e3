import CTether

/// MAJOR.MINOR of include/tether.h as this module was compiled against it. Before 1.0 a
/// different MAJOR.MINOR of the loaded library means a different ABI (the header says so at
/// `tether_version_number`), and calling into it would be undefined behaviour, not an error.
let headerABI = (major: UInt32(TETHER_VERSION_MAJOR), minor: UInt32(TETHER_VERSION_MINOR))

/// Throws `.incompatibleLibrary` unless `number` (`tether_version_number()` encoding) has the
/// header's MAJOR.MINOR; PATCH may differ.
func checkLibraryVersion(number: UInt32, text: String) throws {
    let major = (number >> 16) & 0xff
    let minor = (number >> 8) & 0xff
    if major != headerABI.major || minor != headerABI.minor {
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
