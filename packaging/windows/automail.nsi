; Per-user Windows installer for AutoMail (no administrator rights), built from the one-folder bundle:
;   makensis /DVERSION=0.1.0 /DBUNDLE=dist\AutoMail /DOUTDIR=dist packaging\windows\automail.nsi
; gives dist\AutoMail-Setup-0.1.0.exe. The installer unpacks the bundle to a temporary folder and runs
; `AutoMail.exe install` from there, so the install (quit a running AutoMail, copy to
; %LOCALAPPDATA%\Programs\AutoMail, Start-menu and desktop shortcuts, HKCU Run and Uninstall keys) is
; the same code as the command's (automail/install/windows.py). Its uninstaller runs `AutoMail.exe uninstall`.
; See docs/packaging.md: this script is compiled on Linux in CI; the installer has never run on Windows.

Unicode true
!include "MUI2.nsh"
!include "FileFunc.nsh"

!ifndef VERSION
  !error "pass the version: makensis /DVERSION=x.y.z ..."
!endif
!ifndef BUNDLE
  !define BUNDLE "..\..\dist\AutoMail"
!endif
!ifndef OUTDIR
  !define OUTDIR "..\..\dist"
!endif

Name "AutoMail ${VERSION}"
OutFile "${OUTDIR}\AutoMail-Setup-${VERSION}.exe"
RequestExecutionLevel user          ; per user: HKCU and %LOCALAPPDATA% only
InstallDir "$LOCALAPPDATA\Programs\AutoMail"
!ifdef UNCOMPRESSED
  SetCompress off                   ; CI only checks the script compiles: LZMA of 150 MB takes minutes
!else
  SetCompressor /SOLID lzma
!endif
BrandingText "AutoMail ${VERSION}"

VIProductVersion "${VERSION}.0"
VIAddVersionKey /LANG=1033 "ProductName" "AutoMail"
VIAddVersionKey /LANG=1033 "FileDescription" "AutoMail setup"
VIAddVersionKey /LANG=1033 "FileVersion" "${VERSION}"
VIAddVersionKey /LANG=1033 "ProductVersion" "${VERSION}"
VIAddVersionKey /LANG=1033 "LegalCopyright" "AutoMail authors, MIT licence"

!define MUI_ICON "..\..\assets\automail.ico"
!define MUI_UNICON "..\..\assets\automail.ico"
!define MUI_COMPONENTSPAGE_NODESC
!define MUI_FINISHPAGE_RUN "$INSTDIR\AutoMail.exe"
!define MUI_FINISHPAGE_RUN_TEXT "Start AutoMail now"
!insertmacro MUI_PAGE_COMPONENTS
!insertmacro MUI_PAGE_INSTFILES
!insertmacro MUI_PAGE_FINISH
!insertmacro MUI_UNPAGE_CONFIRM
!insertmacro MUI_UNPAGE_INSTFILES
!insertmacro MUI_LANGUAGE "English"

Var Options

Section "AutoMail (required)" SecApp
  SectionIn RO
  ; Unpack to a temporary folder; `AutoMail.exe install` copies it to $INSTDIR after asking a
  ; running AutoMail to quit (its files cannot be replaced while it runs).
  InitPluginsDir
  SetOutPath "$PLUGINSDIR\AutoMail"
  File /r "${BUNDLE}\*.*"
SectionEnd

Section "Start AutoMail when I log in" SecAutostart
SectionEnd

Section "Desktop shortcut" SecDesktop
SectionEnd

Section "-Install" SecInstall
  StrCpy $Options ""
  ${IfNot} ${SectionIsSelected} ${SecAutostart}
    StrCpy $Options "$Options --no-autostart"
  ${EndIf}
  ${IfNot} ${SectionIsSelected} ${SecDesktop}
    StrCpy $Options "$Options --no-desktop-icon"
  ${EndIf}
  DetailPrint "AutoMail.exe install$Options"
  ExecWait '"$PLUGINSDIR\AutoMail\AutoMail.exe" install$Options' $0
  SetOutPath "$TEMP"                  ; let $PLUGINSDIR be removed
  ${If} $0 != 0
    MessageBox MB_ICONSTOP "AutoMail could not be installed (exit code $0). The reason is in the log file in %LOCALAPPDATA%\AutoMail\logs."
    Abort
  ${EndIf}
  ; The uninstall entry `AutoMail.exe install` wrote runs `AutoMail.exe uninstall`; point it at this
  ; uninstaller instead, which runs that command and then removes the folder.
  WriteUninstaller "$INSTDIR\Uninstall AutoMail.exe"
  WriteRegStr HKCU "Software\Microsoft\Windows\CurrentVersion\Uninstall\AutoMail" "UninstallString" '"$INSTDIR\Uninstall AutoMail.exe"'
  WriteRegStr HKCU "Software\Microsoft\Windows\CurrentVersion\Uninstall\AutoMail" "QuietUninstallString" '"$INSTDIR\Uninstall AutoMail.exe" /S'
SectionEnd

Section "Uninstall"
  ; Quits a running AutoMail, removes the shortcuts and the Run and Uninstall keys; keeps the data
  ; folder and stored passwords (`AutoMail.exe uninstall --purge` deletes those too).
  ExecWait '"$INSTDIR\AutoMail.exe" uninstall' $0
  ${If} $0 != 0
    MessageBox MB_ICONEXCLAMATION "AutoMail.exe uninstall ended with exit code $0; removing its folder anyway."
  ${EndIf}
  RMDir /r /REBOOTOK "$INSTDIR"
SectionEnd
